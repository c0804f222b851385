//! iclora command-line tool (native): adapter info, file inspection, generation and benchmarks.
//! Arguments are parsed by clap; `iclora help <command>` (or `--help` anywhere) describes each.
//!
//!   iclora info
//!   iclora inspect FILE|URL
//!   iclora generate --model DIR|URL --prompt TEXT --width W --height H --steps N --guidance G --seed S --out OUT.png
//!       [--lora FILE|URL[:SCALE]]... [--layout ROWSxCOLS --reference PANEL=IMAGE.png[:STRENGTH]]...
//!       [--convert keep|f16|q8_0|q4_0] [--f16] [--step-cache THRESHOLD [--step-cache-max-reuse N]]
//!   iclora generate (--model ... | --recipe LINK|PNG) --plan   (the files a run reads, nothing generated)
//!   iclora bench kernels [--scale S] [--iters N] [--formats F16,Q8_0,...] [--f16] [--kernels matmul,reductions,...]
//!   iclora bench stream --url URL [--convert keep|f16|q8_0|q4_0] | --make FILE [--gib G] [--hidden H]
//!   iclora bench flux-step [--tokens N] [--format Q4_0|Q8_0|F16] [--double K] [--single K] [--iters N] [--heads H] [--head-dim D] [--loras N] [--rank R] [--f16]

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    use clap::Parser;
    // Mesa prints "XDG_RUNTIME_DIR is invalid or not set" before every command's output where the
    // variable is unset (a root shell, CI); it only needs a writable directory.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: single-threaded here, before any thread (or the GPU driver) reads the environment.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    if let Err(e) = cli::run(cli::Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod args;

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    pub use super::args::Cli;
    use super::args::{Bench, Command, FluxStepArgs, GenerateArgs, KernelArgs, PreviewArgs, StreamArgs};
    use iclora::bench::{bench_kernels, BenchOpts};
    use iclora::gpu::{Gpu, GpuOptions};
    use iclora::kernels::matmul::Precision;
    use iclora::pipeline::store::ModelStore;
    use iclora::weights::load::Convert;

    pub fn run(cli: Cli) -> Result<(), String> {
        match cli.command {
            Command::Info => info(),
            Command::Inspect { file } => inspect(&file),
            Command::Generate(a) => generate(a),
            Command::Bench(Bench::Kernels(a)) => bench(a),
            Command::Bench(Bench::FluxStep(a)) => bench_flux(a),
            Command::Bench(Bench::Preview(a)) => bench_preview(a),
            Command::Bench(Bench::Stream(a)) => bench_stream(a),
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
        use iclora::weights::load::read_header;
        let mut src = ModelStore::new().open(path).map_err(|e| e.to_string())?;
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

    fn bench(a: KernelArgs) -> Result<(), String> {
        let mut opts = BenchOpts { scale: a.scale, iters: a.iters, ..BenchOpts::default() };
        if !a.formats.is_empty() {
            opts.formats = a.formats;
        }
        if !a.kernels.is_empty() {
            opts.kernels = a.kernels;
        }
        if a.f16 {
            opts.precision = Precision::F16;
        }
        let gpu = open()?;
        println!("{}", describe(&gpu));
        println!(
            "scale {} ({} tokens), {} timed runs per case, median; precision {:?}",
            opts.scale,
            ((4608.0 * opts.scale).ceil() as usize).max(1),
            opts.iters,
            opts.precision
        );
        bench_kernels(&gpu, &opts, |row| println!("{row}")).map_err(|e| e.to_string())
    }

    /// `iclora bench flux-step`: time per block type and GFLOP/s of one step (iclora::bench).
    /// `iclora bench preview`: the TAEF1 decoder and the linear map at one canvas size.
    fn bench_preview(a: PreviewArgs) -> Result<(), String> {
        if a.width < 16 || a.height < 16 {
            return Err("--width and --height must be at least 16".into());
        }
        let gpu = open()?;
        println!("{}", describe(&gpu));
        iclora::bench::preview::bench_preview(&gpu, a.width, a.height, a.iters, |row| println!("{row}"))
            .map_err(|e| e.to_string())
    }

    fn bench_flux(a: FluxStepArgs) -> Result<(), String> {
        use iclora::bench::{bench_flux_step, FluxStepOpts};
        let gpu = open()?;
        let software = gpu.info().device_type == "Cpu";
        let mut opts = FluxStepOpts::defaults(software);
        let set = |field: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut opts.tokens, a.tokens);
        set(&mut opts.double, a.double);
        set(&mut opts.single, a.single);
        set(&mut opts.iters, a.iters);
        set(&mut opts.heads, a.heads);
        set(&mut opts.head_dim, a.head_dim);
        set(&mut opts.loras, a.loras);
        set(&mut opts.lora_rank, a.rank);
        if let Some(f) = a.format {
            opts.format = f;
        }
        if a.f16 {
            opts.precision = Precision::F16;
        }
        if opts.tokens < 2
            || opts.double + opts.single == 0
            || opts.heads == 0
            || opts.head_dim < 16
            || !opts.head_dim.is_multiple_of(16)
        {
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
            println!(
                "loras: {} random adapters of rank {} (unmerged, applied by the matmuls)",
                opts.loras, opts.lora_rank
            );
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
        let (panel, rest) =
            v.split_once('=').ok_or_else(|| format!("--reference {v}: expected PANEL=IMAGE[:STRENGTH]"))?;
        let panel: usize = panel.parse().map_err(|_| format!("--reference {v}: the panel must be a number from 1"))?;
        let (file, mode) = match rest.rsplit_once(':').map(|(f, s)| (f, s.parse::<f32>())) {
            Some((f, Ok(s))) => (f, RefMode::Guide { strength: s }),
            _ => (rest, RefMode::Keep),
        };
        let bytes = std::fs::read(file).map_err(|e| format!("--reference: reading `{file}`: {e}"))?;
        let not_png = |e: image::ImageError| format!("--reference: `{file}` is not a PNG image this tool accepts: {e}");
        let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| not_png(e.into()))?;
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

    /// Progress lines to stderr; with `--previews DIR`, each step's preview to `DIR/step-NN.png`.
    struct Previews {
        dir: Option<String>,
        /// The first preview that could not be written (the run stops at the next check).
        failed: Option<String>,
    }

    impl iclora::pipeline::generate::Observer for Previews {
        fn event(&mut self, e: iclora::pipeline::generate::Event<'_>) {
            use iclora::pipeline::generate::Event;
            match (e, &self.dir) {
                (Event::Preview { index, image }, Some(dir)) => {
                    let file = std::path::Path::new(dir).join(format!("step-{:02}.png", index + 1));
                    let written = iclora::recipe::png::encode_image(image, None)
                        .map_err(|e| e.to_string())
                        .and_then(|png| std::fs::write(&file, png).map_err(|e| e.to_string()));
                    if let Err(e) = written {
                        self.failed.get_or_insert(format!("--previews: writing `{}`: {e}", file.display()));
                    }
                }
                (e, _) => iclora::pipeline::generate::Lines(|l: &str| eprintln!("{l}")).event(e),
            }
        }
        fn cancelled(&self) -> bool {
            self.failed.is_some()
        }
        fn preview_every(&self) -> usize {
            self.dir.is_some() as usize
        }
    }

    /// The recipe of `--recipe`: a share link (its own base for relative locations) or a PNG.
    fn read_recipe(src: &str) -> Result<(iclora::recipe::Recipe, Option<String>), String> {
        use iclora::recipe::{png::recipe_from_png, share::from_fragment};
        if src.starts_with("http://") || src.starts_with("https://") || src.contains("#r=") {
            let recipe = from_fragment(src).map_err(|e| format!("--recipe: {e}"))?;
            let base = src.starts_with("http").then(|| src.split('#').next().unwrap_or(src).to_string());
            return Ok((recipe, base));
        }
        let bytes = std::fs::read(src).map_err(|e| format!("--recipe: reading `{src}`: {e}"))?;
        let recipe = recipe_from_png(src, &bytes).map_err(|e| format!("--recipe: {e}"))?;
        Ok((
            recipe.ok_or_else(|| {
                format!("--recipe: `{src}` carries no recipe (the studio writes one into every PNG it makes)")
            })?,
            None,
        ))
    }

    /// `iclora generate`: text to image (iclora::pipeline::generate), PNG to `--out`; with
    /// `--recipe`, the set a share link or PNG describes, derived as the studio's worker does
    /// (`Recipe::generate_options`), and the PNG carries the recipe.
    /// `iclora generate … --plan`: the store's plan of the run, one line per file, and the total
    /// to read from other hosts.
    fn print_plan(
        store: &ModelStore,
        paths: &iclora::pipeline::generate::ModelPaths,
        loras: &[(String, f32)],
    ) -> Result<(), String> {
        let files = pollster::block_on(store.plan(paths, loras)).map_err(|e| e.to_string())?;
        let mut remote = 0u64;
        for f in &files {
            let from = if f.cached {
                "local".to_string()
            } else {
                remote += f.bytes;
                iclora::recipe::url::parse_web_url("location", &f.location)
                    .map(|u| u.host_label())
                    .unwrap_or_else(|e| format!("refused: {e}"))
            };
            println!("{:18} {:>14} bytes  {from:30}  {}", f.component, f.bytes, f.location);
        }
        println!("{} files, {} bytes to read from other hosts", files.len(), remote);
        Ok(())
    }

    fn generate(a: GenerateArgs) -> Result<(), String> {
        use iclora::pipeline::generate::{run, GenerateOptions, ModelPaths};
        let flags = ModelPaths {
            root: a.model,
            transformer: a.transformer,
            vae: a.vae,
            t5: a.t5,
            clip: a.clip,
            t5_tokenizer: a.t5_tokenizer,
            clip_tokenizer: a.clip_tokenizer,
            preview_decoder: None,
        };
        let references = a.references.iter().map(|r| reference(r)).collect::<Result<Vec<_>, _>>()?;
        let (mut paths, opts, recipe) = match &a.recipe {
            Some(src) => {
                let (recipe, link_base) = read_recipe(src)?;
                let base = a.base.or(link_base);
                // Model flags replace the recipe's model (local copies of the same files).
                let paths = if flags.entries().is_empty() {
                    recipe.model_locations(base.as_deref()).map_err(|e| e.to_string())?
                } else {
                    flags
                };
                let loras = recipe.lora_locations(base.as_deref()).map_err(|e| e.to_string())?;
                if recipe.references_used && references.is_empty() {
                    eprintln!("warning: this set was made with reference panels, which recipes do not carry; give them with --reference to reproduce it");
                }
                let opts = GenerateOptions {
                    references,
                    merge_loras: a.lora_merge,
                    convert: a.convert.into(),
                    f16: a.f16,
                    ..recipe.generate_options(loras)
                };
                (paths, opts, Some(recipe))
            }
            None => {
                let step_cache = a.step_cache.map(|threshold| iclora::pipeline::step_cache::StepCache {
                    threshold,
                    max_reuse: a.step_cache_max_reuse,
                });
                if let Some(c) = &step_cache {
                    c.check("--step-cache").map_err(|e| e.to_string())?;
                }
                // clap requires these without --recipe.
                let missing = || {
                    "--prompt, --width, --height, --steps, --guidance and --seed are needed without --recipe"
                        .to_string()
                };
                let opts = GenerateOptions {
                    prompt: a.prompt.ok_or_else(missing)?,
                    width: a.width.ok_or_else(missing)?,
                    height: a.height.ok_or_else(missing)?,
                    steps: a.steps.ok_or_else(missing)?,
                    guidance: a.guidance.ok_or_else(missing)?,
                    seed: a.seed.ok_or_else(missing)?,
                    max_sequence_length: a.max_sequence_length,
                    loras: a.loras,
                    layout: a.layout,
                    references,
                    merge_loras: a.lora_merge,
                    convert: a.convert.into(),
                    f16: a.f16,
                    step_cache,
                };
                (flags, opts, None)
            }
        };
        paths.preview_decoder = a.preview_decoder;
        let store = ModelStore::new();
        if a.plan {
            return print_plan(&store, &paths, &opts.loras);
        }
        let Some(out) = a.out else { return Err("--out is required".into()) };
        if let Some(dir) = &a.previews {
            std::fs::create_dir_all(dir).map_err(|e| format!("--previews: creating `{dir}`: {e}"))?;
        }
        let gpu = open()?;
        eprintln!("{}", gpu.info().name);
        let mut obs = Previews { dir: a.previews, failed: None };
        let image = pollster::block_on(run(&gpu, &store, &paths, &opts, &mut obs)).map_err(|e| e.to_string())?;
        if let Some(e) = obs.failed {
            return Err(e);
        }
        let png = iclora::recipe::png::encode_image(&image, recipe.as_ref()).map_err(|e| e.to_string())?;
        std::fs::write(&out, png).map_err(|e| format!("writing `{out}`: {e}"))?;
        eprintln!(
            "wrote {out} ({}×{}{})",
            image.width,
            image.height,
            if recipe.is_some() { ", with its recipe" } else { "" }
        );
        Ok(())
    }

    /// `iclora bench stream`: `--make FILE [--gib G]` writes the benchmark GGUF; `--url URL
    /// [--convert C]` streams a file into GPU buffers (iclora::bench::stream) and prints one
    /// `stream` row with file MB/s and the process's peak RSS.
    fn bench_stream(a: StreamArgs) -> Result<(), String> {
        use iclora::bench::stream::{bench_stream, peak_rss_kib, write_flux_gguf};
        let (gib, hidden, convert): (f64, u64, Convert) = (a.gib, a.hidden, a.convert.into());
        if let Some(path) = &a.make {
            if !(gib > 0.0 && gib <= 64.0) || hidden == 0 || hidden % 32 != 0 {
                return Err("--gib must be in (0, 64] and --hidden a positive multiple of 32".into());
            }
            let bytes = write_flux_gguf(path, (gib * (1u64 << 30) as f64) as u64, hidden).map_err(|e| e.to_string())?;
            println!("wrote {path}: {bytes} bytes ({:.2} GiB)", bytes as f64 / (1u64 << 30) as f64);
            return Ok(());
        }
        let url = a.url.as_deref().ok_or("bench stream needs --url URL or --make FILE")?;
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
