//! Every WGSL program, in every override variant the wrappers use, parsed and
//! validated by naga and compiled to SPIR-V: no GPU needed. Also checks that
//! every file in shaders/ belongs to some program.

use iclora::kernels::all_shaders;

fn validate(name: &str, source: &str, entry: &str, overrides: &[(&'static str, f64)]) -> Result<(), String> {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut validator = Validator::new(ValidationFlags::all(), Capabilities::all());
    let info = validator.validate(&module).map_err(|e| e.emit_to_string(source))?;
    let mut constants = naga::back::PipelineConstants::default();
    for (k, v) in overrides {
        constants.insert(k.to_string(), *v);
    }
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, entry)),
        &constants,
    )
    .map_err(|e| format!("{name}/{entry} {overrides:?}: {e}"))?;
    let options = naga::back::spv::Options::default();
    let pipeline =
        naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: entry.to_string() };
    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| format!("{name}/{entry} {overrides:?}: SPIR-V: {e}"))?;
    Ok(())
}

#[test]
fn every_shader_variant_validates() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (spec, variants) in all_shaders() {
        assert!(!variants.is_empty(), "{} lists no variants", spec.name);
        let source = spec.source();
        for v in variants {
            count += 1;
            if let Err(e) = validate(spec.name, &source, v.entry, &v.overrides) {
                failures.push(format!("{}: {e}", spec.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {count} variants failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{count} shader variants valid");
}

#[test]
fn every_shader_file_is_used() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let used: Vec<String> = all_shaders().iter().flat_map(|(s, _)| s.sources.iter().map(|x| x.to_string())).collect();
    for entry in std::fs::read_dir(dir).expect("shaders/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read shader");
        assert!(used.contains(&text), "{} is not part of any program in kernels::all_shaders()", path.display());
    }
}

#[test]
fn a_broken_shader_is_rejected() {
    let broken = "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_name; }";
    assert!(validate("broken", broken, "main", &[]).is_err());
}
