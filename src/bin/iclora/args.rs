//! The command line's grammar: subcommands, options with their help texts, and the parsers of
//! typed values (clap). The commands themselves are in main.rs.

use clap::{Args, Parser, Subcommand, ValueEnum};
use iclora::bench::KERNELS;
use iclora::gpu::DType;
use iclora::pipeline::panels::Layout;
use iclora::weights::load::Convert;

#[derive(Parser)]
#[command(
    name = "iclora",
    version,
    about = "In-Context LoRA for FLUX.1 on WebGPU: the native tool (adapter info, file inspection, generation, benchmarks)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// `Generate` is larger than the others; the enum is built once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Print the GPU adapter, its features and limits
    Info,
    /// List a safetensors/GGUF file's metadata and tensors
    Inspect {
        /// A local file, or an http(s) URL read with Range requests
        file: String,
    },
    /// Text to image as diffusers' FluxPipeline (progress on stderr), PNG to --out
    Generate(GenerateArgs),
    /// Time kernels, a FLUX step or weight streaming on this adapter
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
pub enum Bench {
    /// Time kernels at FLUX shapes
    Kernels(KernelArgs),
    /// Time one denoising step of a FLUX.1 transformer with random weights
    FluxStep(FluxStepArgs),
    /// Time a live preview at a canvas size: the TAEF1 decoder vs the linear latent→RGB map
    Preview(PreviewArgs),
    /// Stream a weights file over HTTP Range requests into GPU buffers (file MB/s, peak RSS),
    /// or write a FLUX-shaped GGUF to stream
    Stream(StreamArgs),
}

/// How the transformer's float weight matrices are converted on the GPU while they load.
#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ConvertArg {
    Keep,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
}

impl From<ConvertArg> for Convert {
    fn from(c: ConvertArg) -> Convert {
        match c {
            ConvertArg::Keep => Convert::Keep,
            ConvertArg::F16 => Convert::F16,
            ConvertArg::Q8_0 => Convert::Q8_0,
            ConvertArg::Q4_0 => Convert::Q4_0,
        }
    }
}

#[derive(Args)]
pub struct KernelArgs {
    /// Fraction of FLUX's 4608 tokens to use (~0.1 on software adapters), in (0, 4]
    #[arg(long, default_value_t = 1.0, value_parser = scale)]
    pub scale: f64,
    /// Timed runs per case, median reported
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Comma-separated weight formats (default: all of F32,F16,BF16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K,Q5_K,Q6_K)
    #[arg(long, value_delimiter = ',', value_parser = weight_format)]
    pub formats: Vec<DType>,
    /// f16 tile arithmetic (needs shader-f16)
    #[arg(long)]
    pub f16: bool,
    /// Comma-separated kernel families (default: all but matmul_coop, the cooperative-matrix
    /// path; reductions times norms/softmax with subgroup and workgroup-memory sums)
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(KERNELS))]
    pub kernels: Vec<String>,
}

#[derive(Args)]
pub struct PreviewArgs {
    /// Canvas width (pixels)
    #[arg(long, default_value_t = 1024)]
    pub width: usize,
    /// Canvas height (pixels)
    #[arg(long, default_value_t = 1024)]
    pub height: usize,
    /// Timed runs after a warm-up, median reported
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
}

#[derive(Args)]
pub struct FluxStepArgs {
    /// Joint tokens, 1/9 of them text (default 4608 = 1024² + 512 text; 256 on CPU adapters)
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Weight format: Q4_0, Q8_0 or F16 (default Q8_0)
    #[arg(long, value_parser = step_format)]
    pub format: Option<DType>,
    /// Double blocks to run (default 19; 1 on CPU adapters); blocks share weights
    #[arg(long)]
    pub double: Option<usize>,
    /// Single blocks to run (default 38; 1 on CPU adapters)
    #[arg(long)]
    pub single: Option<usize>,
    /// Timed runs, median reported (default 3)
    #[arg(long)]
    pub iters: Option<usize>,
    /// Heads: a narrower model for smoke tests only (FLUX.1: 24)
    #[arg(long)]
    pub heads: Option<usize>,
    /// Head dim, a multiple of 16 (FLUX.1: 128)
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// Attach N random LoRA adapters at run time, each on every attention/MLP Linear of the
    /// blocks (q/k/v separately, as IC-LoRA's); gflops count base matmuls only
    #[arg(long)]
    pub loras: Option<usize>,
    /// Rank of each adapter (default 16)
    #[arg(long)]
    pub rank: Option<usize>,
    /// f16 tile arithmetic in every matmul (f16 products, f32 accumulation; needs shader-f16)
    #[arg(long)]
    pub f16: bool,
}

#[derive(Args)]
pub struct StreamArgs {
    /// The weights file to stream (http or https)
    #[arg(long, required_unless_present = "make", conflicts_with = "make")]
    pub url: Option<String>,
    /// Write a FLUX-shaped Q8_0/Q4_0 GGUF here instead
    #[arg(long)]
    pub make: Option<String>,
    /// Size of the file --make writes, GiB in (0, 64]
    #[arg(long, default_value_t = 1.0)]
    pub gib: f64,
    /// Block width of the file --make writes, a multiple of 32 (FLUX.1: 3072)
    #[arg(long, default_value_t = 3072)]
    pub hidden: u64,
    /// Conversion while streaming
    #[arg(long, value_enum, default_value = "keep")]
    pub convert: ConvertArg,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A diffusers-layout folder or URL root (each component flag below overrides one part)
    #[arg(long)]
    pub model: Option<String>,
    /// The transformer (file, folder or URL)
    #[arg(long)]
    pub transformer: Option<String>,
    /// The VAE
    #[arg(long)]
    pub vae: Option<String>,
    /// The T5 encoder
    #[arg(long)]
    pub t5: Option<String>,
    /// The CLIP text encoder
    #[arg(long)]
    pub clip: Option<String>,
    /// T5's tokenizer.json
    #[arg(long)]
    pub t5_tokenizer: Option<String>,
    /// CLIP's tokenizer.json
    #[arg(long)]
    pub clip_tokenizer: Option<String>,
    /// Make the set a share link or a studio PNG describes — its model (unless the flags above
    /// give one), adapters, prompt, size, steps, guidance, seed, layout and step cache — as the
    /// studio does; the PNG written carries the recipe
    #[arg(long, value_name = "LINK|PNG")]
    pub recipe: Option<String>,
    /// The studio's address, to read a PNG recipe's relative model location (the bundled demo's);
    /// a share link is its own base
    #[arg(long, value_name = "URL", requires = "recipe")]
    pub base: Option<String>,
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    pub prompt: Option<String>,
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    pub width: Option<usize>,
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    pub height: Option<usize>,
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    pub steps: Option<usize>,
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    pub guidance: Option<f32>,
    /// Seed of the initial noise (the same noise as torch.randn with this seed)
    #[arg(long, required_unless_present = "recipe", conflicts_with = "recipe")]
    pub seed: Option<u64>,
    /// The PNG to write
    #[arg(long, required_unless_present = "plan")]
    pub out: Option<String>,
    /// Print every file the run would read (component, size, host or local path) and stop:
    /// nothing is generated and no GPU is opened (what the studio shows before a download)
    #[arg(long)]
    pub plan: bool,
    /// Write the live preview after each step (but the last) to DIR/step-NN.png
    #[arg(long, value_name = "DIR")]
    pub previews: Option<String>,
    /// Decode those previews with this tiny autoencoder (TAEF1: its weights file, or its folder
    /// with config.json) instead of the linear latent→RGB map (1/8 resolution)
    #[arg(long, value_name = "FILE|FOLDER", requires = "previews")]
    pub preview_decoder: Option<String>,
    /// T5 tokens (default 512)
    #[arg(long, conflicts_with = "recipe")]
    pub max_sequence_length: Option<usize>,
    /// A LoRA file or URL, optionally with :SCALE (repeatable)
    #[arg(long = "lora", value_name = "F[:SCALE]", value_parser = lora, conflicts_with = "recipe")]
    pub loras: Vec<(String, f32)>,
    /// Panel grid of the canvas, e.g. 3x1
    #[arg(long, value_name = "ROWSxCOLS", value_parser = layout, conflicts_with = "recipe")]
    pub layout: Option<Layout>,
    /// A reference panel (counted from 1, row by row): kept as given (RePaint) or, with a
    /// strength in (0,1), imposed while sigma ≥ strength (SDEdit-like); needs --layout
    #[arg(long = "reference", value_name = "PANEL=IMAGE.png[:STRENGTH]")]
    pub references: Vec<String>,
    /// Merge the LoRAs into F32/F16 transformer weights (faster steps)
    #[arg(long, value_name = "yes|no", default_value = "no", value_parser = yes_no)]
    pub lora_merge: bool,
    /// Convert the transformer's float weight matrices on the GPU while they load
    #[arg(long, value_enum, default_value = "keep", ignore_case = true)]
    pub convert: ConvertArg,
    /// The transformer's matmuls with f16 tiles (needs shader-f16; ~1e-3 relative)
    #[arg(long)]
    pub f16: bool,
    /// Reuse the transformer's blocks after the first on steps where the first block's
    /// residual moved less than THRESHOLD (relative L1; ~0.05–0.25, 0 measures only) since the
    /// last computed step; prints `step cache: computed C of N steps`
    #[arg(long, value_name = "THRESHOLD", allow_negative_numbers = true, conflicts_with = "recipe")]
    pub step_cache: Option<f32>,
    /// At most N reused steps in a row (default: no limit)
    #[arg(long, value_name = "N", requires = "step_cache")]
    pub step_cache_max_reuse: Option<u32>,
}

pub fn scale(v: &str) -> Result<f64, String> {
    let s: f64 = v.parse().map_err(|e| format!("{e}"))?;
    if s > 0.0 && s <= 4.0 {
        Ok(s)
    } else {
        Err("--scale must be in (0, 4]".into())
    }
}

pub fn weight_format(v: &str) -> Result<DType, String> {
    DType::parse(v).filter(|d| DType::WEIGHT_FORMATS.contains(d)).ok_or_else(|| format!("unknown weight format {v}"))
}

pub fn step_format(v: &str) -> Result<DType, String> {
    DType::parse(v)
        .filter(|d| [DType::Q4_0, DType::Q8_0, DType::F16].contains(d))
        .ok_or_else(|| format!("{v} is not one of Q4_0, Q8_0, F16"))
}

/// `F:SCALE` when what follows the last colon is a number (a URL's `https:` is not).
pub fn lora(v: &str) -> Result<(String, f32), String> {
    Ok(match v.rsplit_once(':').map(|(f, s)| (f, s.parse::<f32>())) {
        Some((f, Ok(s))) if !f.is_empty() => (f.to_string(), s),
        _ => (v.to_string(), 1.0),
    })
}

pub fn layout(v: &str) -> Result<Layout, String> {
    let (r, c) = v.split_once(['x', '×']).ok_or("expected ROWSxCOLS, e.g. 3x1")?;
    let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    Ok(Layout::new(num(r)?, num(c)?))
}

pub fn yes_no(v: &str) -> Result<bool, String> {
    match v {
        "yes" | "on" | "true" => Ok(true),
        "no" | "off" | "false" => Ok(false),
        _ => Err("expected yes or no".into()),
    }
}
