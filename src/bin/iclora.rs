//! iclora command-line tool (native): adapter info and benchmarks.
//!
//!   iclora info
//!   iclora inspect FILE|URL
//!   iclora generate --model DIR|URL --prompt TEXT --width W --height H --steps N --guidance G --seed S --out OUT.png
//!       [--lora FILE|URL[:SCALE]]... [--layout ROWSxCOLS --reference PANEL=IMAGE.png[:STRENGTH]]...
//!       [--convert keep|f16|q8_0|q4_0] [--f16] [--step-cache THRESHOLD [--step-cache-max-reuse N]]
//!   iclora bench kernels [--scale S] [--iters N] [--formats F16,Q8_0,...] [--f16] [--kernels matmul,reductions,...]
//!   iclora bench stream --url URL [--convert keep|f16|q8_0|q4_0] | --make FILE [--gib G] [--hidden H]
//!   iclora bench flux-step [--tokens N] [--format Q4_0|Q8_0|F16] [--double K] [--single K] [--iters N] [--heads H] [--head-dim D] [--loras N] [--rank R] [--f16]

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    if let Err(e) = cli::run(std::env::args().skip(1).collect()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use iclora::bench::{bench_kernels, BenchOpts, KERNELS};
    use iclora::gpu::{DType, Gpu, GpuOptions};
    use iclora::kernels::matmul::Precision;

    const USAGE: &str = "usage:
  iclora info                       print the GPU adapter, its features and limits
  iclora inspect FILE|URL           list a safetensors/GGUF file's metadata and tensors (URL: http(s), Range requests)
  iclora bench flux-step [options]  time one denoising step of a FLUX.1 transformer with random weights
      --tokens N     joint tokens, 1/9 of them text (default 4608 = 1024² + 512 text; 256 on CPU adapters)
      --format F     weight format Q4_0, Q8_0 or F16 (default Q8_0)
      --double K     double blocks to run (default 19; 1 on CPU adapters); blocks share weights
      --single K     single blocks to run (default 38; 1 on CPU adapters)
      --iters N      timed runs, median reported (default 3)
      --heads H, --head-dim D   narrower model for smoke tests only (FLUX.1: 24 × 128)
      --loras N      attach N random LoRA adapters at run time (default 0), each on every attention/MLP
                     Linear of the blocks (q/k/v separately, as IC-LoRA's); gflops count base matmuls only
      --rank R       rank of each adapter (default 16)
      --f16          f16 tile arithmetic in every matmul (f16 products, f32 accumulation; needs shader-f16)
  iclora generate --model DIR|URL --prompt TEXT --width W --height H --steps N --guidance G --seed S --out OUT.png
      [--transformer F] [--vae F] [--t5 F] [--clip F] [--t5-tokenizer F] [--clip-tokenizer F]
      [--lora F[:SCALE]]... [--max-sequence-length L] [--convert keep|f16|q8_0|q4_0]
      [--layout ROWSxCOLS] [--reference PANEL=IMAGE.png[:STRENGTH]]... [--lora-merge yes] [--f16]
      [--step-cache THRESHOLD [--step-cache-max-reuse N]]
                     --step-cache reuses the transformer's blocks after the first on steps where the first
                     block's residual moved less than THRESHOLD (relative L1; ~0.05–0.25, 0 measures only)
                     since the last computed step, at most N steps in a row (default: no limit); prints
                     `step cache: computed C of N steps`
                     --f16 runs the transformer's matmuls with f16 tiles (needs shader-f16; ~1e-3 relative)
                     --lora-merge yes merges the LoRAs into F32/F16 transformer weights (faster steps)
                     reference panels (counted from 1, row by row) are kept as given (RePaint) or, with a
                     strength in (0,1), imposed while sigma ≥ strength (SDEdit-like); needs --layout
                     text to image as diffusers' FluxPipeline (diffusers-layout folder or URL root; each F, a
                     path or URL, overrides that component; progress on stderr); --convert converts
                     the transformer's float weight matrices on the GPU while they load (default keep)
  iclora bench stream --url URL [--convert C]   stream a weights file over HTTP Range requests into GPU
                     buffers (each tensor dropped after loading); file MB/s and peak RSS
  iclora bench stream --make FILE [--gib G] [--hidden H]   write a FLUX-shaped Q8_0/Q4_0 GGUF of ≥ G GiB
                     (default 1) of blocks of width H (default 3072, FLUX.1; smaller for smoke tests)
  iclora bench kernels [options]    time kernels at FLUX shapes
      --scale S      fraction of FLUX's 4608 tokens to use (default 1.0; ~0.1 on software adapters)
      --iters N      timed runs per case, median reported (default 5)
      --formats L    comma-separated weight formats (default: all of F32,F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K)
      --f16          f16 tile arithmetic (needs shader-f16)
      --kernels L    comma-separated subset of matmul,matmul_coop,attention,conv2d,reductions (default:
                     all but matmul_coop, the cooperative-matrix path, which needs an adapter that
                     offers it; reductions times norms/softmax with subgroup and workgroup-memory sums)";

    pub fn run(args: Vec<String>) -> Result<(), String> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["info"] => info(),
            ["inspect", path] => inspect(path),
            ["bench", "kernels", rest @ ..] => bench(rest),
            ["bench", "flux-step", rest @ ..] => bench_flux(rest),
            ["bench", "stream", rest @ ..] => bench_stream(rest),
            ["generate", rest @ ..] => generate(rest),
            [] | ["help"] | ["--help"] | ["-h"] => {
                println!("{USAGE}");
                Ok(())
            }
            _ => Err(format!("unknown command {:?}\n{USAGE}", args.join(" "))),
        }
    }

    fn open() -> Result<Gpu, String> {
        Gpu::new_blocking(&GpuOptions::default()).map_err(|e| e.to_string())
    }

    fn describe(gpu: &Gpu) -> String {
        let i = gpu.info();
        let f = gpu.features();
        format!(
            "adapter: {} ({}, {}, driver {})\nfeatures: shader-f16={} subgroups={} timestamp-query={} cooperative-matrix={}\nlimits: max_storage_binding={} max_buffer={} max_invocations={} max_workgroup_size_x={} max_workgroups_per_dim={} workgroup_storage={} storage_buffers_per_stage={} subgroup_size={}..{}",
            i.name, i.backend, i.device_type, i.driver,
            f.shader_f16, f.subgroups, f.timestamp_query,
            f.cooperative_matrix.map(|c| format!("{}x{}x{} {:?}->{:?}", c.m, c.n, c.k, c.ab, c.acc)).unwrap_or_else(|| "no".into()),
            i.max_storage_binding, i.max_buffer_size, i.max_invocations, i.max_workgroup_size_x,
            i.max_workgroups_per_dim, i.max_workgroup_storage, i.max_storage_buffers_per_stage,
            i.subgroup_min_size, i.subgroup_max_size
        )
    }

    /// `iclora inspect <file>`: format, metadata (long arrays cut) and one line per tensor.
    fn inspect(path: &str) -> Result<(), String> {
        use iclora::weights::http::HttpSource;
        use iclora::weights::load::{read_header, ByteSource, FileSource};
        let mut src: Box<dyn ByteSource> = if path.starts_with("http://") || path.starts_with("https://") {
            Box::new(HttpSource::open(path).map_err(|e| e.to_string())?)
        } else {
            Box::new(FileSource::open(path).map_err(|e| e.to_string())?)
        };
        let h = read_header(src.as_mut()).map_err(|e| e.to_string())?;
        let total: u64 = h.tensors.iter().map(|t| t.size).sum();
        println!("{}: {} file, {} bytes, data section at byte {}", h.file, h.format, h.file_len, h.data_start);
        println!("recognized: {}", iclora::weights::detect::detect(&h));
        println!("metadata ({} keys):", h.metadata.len());
        for (k, v) in &h.metadata {
            println!("  {k} = {}", v.display_short(8));
        }
        println!("tensors ({}, {total} bytes):", h.tensors.len());
        let width = h.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &h.tensors {
            let shape = format!("{:?}", t.shape);
            let note = if t.dtype.is_supported() { "" } else { "  (not loadable)" };
            println!("  {:width$}  {shape:20}  {:8}  {:>12}{note}", t.name, t.dtype.name(), t.size);
        }
        Ok(())
    }

    fn info() -> Result<(), String> {
        println!("{}", describe(&open()?));
        Ok(())
    }

    fn bench(args: &[&str]) -> Result<(), String> {
        let mut opts = BenchOpts::default();
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            let mut value = || it.next().copied().ok_or_else(|| format!("{a} needs a value"));
            match a {
                "--scale" => opts.scale = value()?.parse().map_err(|e| format!("--scale: {e}"))?,
                "--iters" => opts.iters = value()?.parse().map_err(|e| format!("--iters: {e}"))?,
                "--formats" => {
                    opts.formats = value()?
                        .split(',')
                        .map(|s| DType::parse(s).filter(|d| DType::WEIGHT_FORMATS.contains(d)).ok_or_else(|| format!("unknown weight format {s}")))
                        .collect::<Result<_, _>>()?
                }
                "--f16" => opts.precision = Precision::F16,
                "--kernels" => {
                    opts.kernels = value()?.split(',').map(str::to_string).collect();
                    if let Some(bad) = opts.kernels.iter().find(|k| !KERNELS.contains(&k.as_str())) {
                        return Err(format!("unknown kernel family {bad} (known: {})", KERNELS.join(",")));
                    }
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if !(opts.scale > 0.0 && opts.scale <= 4.0) {
            return Err("--scale must be in (0, 4]".into());
        }
        let gpu = open()?;
        println!("{}", describe(&gpu));
        println!("scale {} ({} tokens), {} timed runs per case, median; precision {:?}", opts.scale, ((4608.0 * opts.scale).ceil() as usize).max(1), opts.iters, opts.precision);
        bench_kernels(&gpu, &opts, |row| println!("{row}")).map_err(|e| e.to_string())
    }

    /// `iclora bench flux-step`: time per block type and GFLOP/s of one step (iclora::bench).
    fn bench_flux(args: &[&str]) -> Result<(), String> {
        use iclora::bench::{bench_flux_step, FluxStepOpts};
        let gpu = open()?;
        let software = gpu.info().device_type == "Cpu";
        let mut opts = FluxStepOpts::defaults(software);
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            if a == "--f16" {
                opts.precision = Precision::F16;
                continue;
            }
            let v = it.next().copied().ok_or_else(|| format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
            match a {
                "--tokens" => opts.tokens = num(v)?,
                "--double" => opts.double = num(v)?,
                "--single" => opts.single = num(v)?,
                "--iters" => opts.iters = num(v)?,
                "--heads" => opts.heads = num(v)?,
                "--head-dim" => opts.head_dim = num(v)?,
                "--loras" => opts.loras = num(v)?,
                "--rank" => opts.lora_rank = num(v)?,
                "--format" => {
                    opts.format = DType::parse(v)
                        .filter(|d| [DType::Q4_0, DType::Q8_0, DType::F16].contains(d))
                        .ok_or_else(|| format!("--format: {v} is not one of Q4_0, Q8_0, F16"))?
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if opts.tokens < 2 || opts.double + opts.single == 0 || opts.heads == 0 || opts.head_dim < 16 || !opts.head_dim.is_multiple_of(16) {
            return Err("need --tokens >= 2, at least one block, --heads >= 1 and --head-dim a multiple of 16".into());
        }
        if opts.loras > 0 && opts.lora_rank == 0 {
            return Err("--rank must be at least 1".into());
        }
        println!("{}", describe(&gpu));
        let (txt, img) = opts.split();
        let full = opts.double == 19 && opts.single == 38 && opts.heads * opts.head_dim == 3072;
        println!(
            "flux-step: {} tokens ({txt} text + {img} image), {} weights, hidden {} ({} heads × {}), {} double + {} single blocks{}, {} timed runs, median",
            opts.tokens, opts.format, opts.heads * opts.head_dim, opts.heads, opts.head_dim, opts.double, opts.single,
            if full { "" } else { " (a subset/narrowed FLUX.1: step(est) extrapolates to 19 + 38 blocks)" },
            opts.iters
        );
        if opts.loras > 0 {
            println!("loras: {} random adapters of rank {} (unmerged, applied by the matmuls)", opts.loras, opts.lora_rank);
        }
        if software && opts.tokens < 4608 {
            println!("note: CPU adapter: defaults are 256 tokens and 1 + 1 blocks (set --tokens, --double, --single to change)");
        }
        bench_flux_step(&gpu, &opts, |row| println!("{row}")).map_err(|e| e.to_string())
    }
    /// `--reference PANEL=IMAGE.png[:STRENGTH]` (panels counted from 1, row by row; without a
    /// strength the panel is kept).
    fn reference(v: &str) -> Result<iclora::pipeline::conditioning::Reference, String> {
        use iclora::pipeline::conditioning::{RefMode, Reference};
        let (panel, rest) = v.split_once('=').ok_or_else(|| format!("--reference {v}: expected PANEL=IMAGE[:STRENGTH]"))?;
        let panel: usize = panel.parse().map_err(|_| format!("--reference {v}: the panel must be a number from 1"))?;
        let (file, mode) = match rest.rsplit_once(':').map(|(f, s)| (f, s.parse::<f32>())) {
            Some((f, Ok(s))) => (f, RefMode::Guide { strength: s }),
            _ => (rest, RefMode::Keep),
        };
        let bytes = std::fs::read(file).map_err(|e| format!("--reference: reading `{file}`: {e}"))?;
        let not_png = |e: image::ImageError| format!("--reference: `{file}` is not a PNG image this tool accepts: {e}");
        let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().map_err(|e| not_png(e.into()))?;
        // The same caps as a PNG dropped on the page, checked from the header before decoding.
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(iclora::limits::PNG_SIDE.max as u32);
        limits.max_image_height = Some(iclora::limits::PNG_SIDE.max as u32);
        limits.max_alloc = Some(iclora::limits::PNG_DECODED_BYTES.max);
        reader.limits(limits);
        let img = reader.decode().map_err(not_png)?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let image = iclora::pipeline::image::RgbImage { width: w, height: h, pixels: img.into_raw() };
        Ok(Reference { panel: panel.checked_sub(1).ok_or("--reference: panels are counted from 1")?, image, mode })
    }

    /// `iclora generate`: text to image (iclora::pipeline::generate), PNG to `--out`.
    fn generate(args: &[&str]) -> Result<(), String> {
        use iclora::pipeline::generate::{encode_png, generate, GenerateOptions, ModelPaths};
        let mut paths = ModelPaths::default();
        let (mut prompt, mut out, mut loras, mut layout, mut refs) = (None, None, Vec::new(), None, Vec::new());
        let mut merge = false;
        let (mut width, mut height, mut steps, mut guidance, mut seed, mut max_len) = (None, None, None, None, None, None);
        let mut convert = iclora::weights::load::Convert::Keep;
        let mut f16 = false;
        let (mut cache_threshold, mut cache_max_reuse) = (None, None);
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            if a == "--f16" {
                f16 = true;
                continue;
            }
            let v = it.next().map(|s| s.to_string()).ok_or_else(|| format!("{a} needs a value"))?;
            let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{a} {v}: {e}"));
            match a {
                "--model" => paths.model = Some(v),
                "--transformer" => paths.transformer = Some(v),
                "--vae" => paths.vae = Some(v),
                "--t5" => paths.t5 = Some(v),
                "--clip" => paths.clip = Some(v),
                "--t5-tokenizer" => paths.t5_tokenizer = Some(v),
                "--clip-tokenizer" => paths.clip_tokenizer = Some(v),
                "--prompt" => prompt = Some(v),
                "--out" => out = Some(v),
                "--width" => width = Some(num(&v)?),
                "--height" => height = Some(num(&v)?),
                "--steps" => steps = Some(num(&v)?),
                "--max-sequence-length" => max_len = Some(num(&v)?),
                "--guidance" => guidance = Some(v.parse::<f32>().map_err(|e| format!("--guidance {v}: {e}"))?),
                "--seed" => seed = Some(v.parse::<u64>().map_err(|e| format!("--seed {v}: {e}"))?),
                "--lora" => {
                    // `F:SCALE` when what follows the last colon is a number (a URL's `https:` is not).
                    let (file, scale) = match v.rsplit_once(':').map(|(f, s)| (f, s.parse::<f32>())) {
                        Some((f, Ok(s))) if !f.is_empty() => (f.to_string(), s),
                        _ => (v.clone(), 1.0),
                    };
                    loras.push((file, scale));
                }
                "--layout" => {
                    let (r, c) = v.split_once(['x', '×']).ok_or_else(|| format!("--layout {v}: expected ROWSxCOLS, e.g. 3x1"))?;
                    layout = Some(iclora::pipeline::panels::Layout::new(num(r)?, num(c)?));
                }
                "--reference" => refs.push(reference(&v)?),
                "--step-cache" => cache_threshold = Some(v.parse::<f32>().map_err(|e| format!("--step-cache {v}: {e}"))?),
                "--step-cache-max-reuse" => cache_max_reuse = Some(v.parse::<u32>().map_err(|e| format!("{a} {v}: {e}"))?),
                "--convert" => convert = parse_convert(&v)?,
                "--lora-merge" => {
                    merge = match v.as_str() {
                        "yes" | "on" | "true" => true,
                        "no" | "off" | "false" => false,
                        _ => return Err(format!("--lora-merge {v}: expected yes or no")),
                    }
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        let need = |name: &str| format!("generate needs {name}\n{USAGE}");
        let step_cache = match (cache_threshold, cache_max_reuse) {
            (Some(threshold), max_reuse) => Some(iclora::pipeline::step_cache::StepCache { threshold, max_reuse }),
            (None, Some(_)) => return Err(format!("--step-cache-max-reuse needs --step-cache THRESHOLD\n{USAGE}")),
            (None, None) => None,
        };
        if let Some(c) = &step_cache {
            c.check("--step-cache").map_err(|e| e.to_string())?;
        }
        let opts = GenerateOptions {
            prompt: prompt.ok_or_else(|| need("--prompt"))?,
            width: width.ok_or_else(|| need("--width"))?,
            height: height.ok_or_else(|| need("--height"))?,
            steps: steps.ok_or_else(|| need("--steps"))?,
            guidance: guidance.ok_or_else(|| need("--guidance"))?,
            seed: seed.ok_or_else(|| need("--seed"))?,
            max_sequence_length: max_len,
            loras,
            layout,
            references: refs,
            merge_loras: merge,
            convert,
            f16,
            step_cache,
        };
        let out = out.ok_or_else(|| need("--out"))?;
        let gpu = open()?;
        eprintln!("{}", gpu.info().name);
        let image = generate(&gpu, &paths, &opts, &mut |line| eprintln!("{line}")).map_err(|e| e.to_string())?;
        let png = encode_png(&image).map_err(|e| e.to_string())?;
        std::fs::write(&out, png).map_err(|e| format!("writing `{out}`: {e}"))?;
        eprintln!("wrote {out} ({}×{})", image.width, image.height);
        Ok(())
    }

    /// `--convert keep|f16|q8_0|q4_0` (case-insensitive).
    fn parse_convert(v: &str) -> Result<iclora::weights::load::Convert, String> {
        use iclora::weights::load::Convert;
        Ok(match v.to_ascii_lowercase().as_str() {
            "keep" => Convert::Keep,
            "f16" => Convert::F16,
            "q8_0" => Convert::Q8_0,
            "q4_0" => Convert::Q4_0,
            _ => return Err(format!("--convert {v}: expected keep, f16, q8_0 or q4_0")),
        })
    }

    /// `iclora bench stream`: `--make FILE [--gib G]` writes the benchmark GGUF; `--url URL
    /// [--convert C]` streams a file into GPU buffers (iclora::bench_stream) and prints one
    /// `stream` row with file MB/s and the process's peak RSS.
    fn bench_stream(args: &[&str]) -> Result<(), String> {
        use iclora::bench_stream::{bench_stream, peak_rss_kib, write_flux_gguf};
        let (mut url, mut make, mut gib, mut hidden, mut convert) = (None, None, 1.0f64, 3072u64, iclora::weights::load::Convert::Keep);
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            let v = it.next().copied().ok_or_else(|| format!("{a} needs a value"))?;
            match a {
                "--url" => url = Some(v),
                "--make" => make = Some(v),
                "--gib" => gib = v.parse().map_err(|e| format!("--gib {v}: {e}"))?,
                "--hidden" => hidden = v.parse().map_err(|e| format!("--hidden {v}: {e}"))?,
                "--convert" => convert = parse_convert(v)?,
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if let Some(path) = make {
            if !(gib > 0.0 && gib <= 64.0) || hidden == 0 || hidden % 32 != 0 {
                return Err("--gib must be in (0, 64] and --hidden a positive multiple of 32".into());
            }
            let bytes = write_flux_gguf(path, (gib * (1u64 << 30) as f64) as u64, hidden).map_err(|e| e.to_string())?;
            println!("wrote {path}: {bytes} bytes ({:.2} GiB)", bytes as f64 / (1u64 << 30) as f64);
            return Ok(());
        }
        let url = url.ok_or_else(|| format!("bench stream needs --url URL or --make FILE\n{USAGE}"))?;
        let gpu = open()?;
        println!("adapter: {}", gpu.info().name);
        let mut last = 0;
        let r = bench_stream(&gpu, url, convert, |i, n| {
            if i * 10 / n > last {
                last = i * 10 / n;
                eprintln!("stream: {i}/{n} tensors");
            }
        })
        .map_err(|e| e.to_string())?;
        let rss = peak_rss_kib().map_or("?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
        println!(
            "stream convert={convert:?} tensors={} file_bytes={} gpu_bytes={} secs={:.3} mb_s={:.1} retries={} pool_mib={:.0} peak_rss_mib={rss}",
            r.tensors, r.file_bytes, r.gpu_bytes, r.secs, r.mb_per_s(), r.retries, r.pooled_bytes as f64 / (1 << 20) as f64
        );
        Ok(())
    }
}
