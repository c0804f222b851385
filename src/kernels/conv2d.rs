//! Wrapper for `shaders/conv2d.wgsl`: 2-D convolution of one `[C, H, W]` image (the FLUX VAE,
//! src/flux/modules/autoencoder.py @ 802fb47) with F32 or F16 weights, bias, optional fused nearest ×2
//! upsampling of the input (the decoder's `Upsample`), optional fused residual add (`shortcut(x) + h`) and
//! optional
//! fused ReLU (the tiny preview decoder, `model::taef1`).
//! Reference: `reference::conv2d`.

use bytemuck::{Pod, Zeroable};

use super::{expect_f32, shape_err, Variant};
use crate::error::{Error, Result};
use crate::gpu::{Batch, Binding, DType, Gpu, ShaderSpec, Tensor};

pub static SHADER: ShaderSpec = ShaderSpec {
    name: "conv2d",
    sources: &[include_str!("../../shaders/conv2d.wgsl")],
    needs_f16: false,
    needs_subgroups: false,
};

/// Zero padding on each side of the input, in input pixels (after upsampling, when fused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub left: usize,
    pub right: usize,
    pub top: usize,
    pub bottom: usize,
}

impl Padding {
    /// The same padding on every side (VAE 3×3 convs: 1; 1×1 convs: 0).
    pub const fn uniform(p: usize) -> Padding {
        Padding { left: p, right: p, top: p, bottom: p }
    }

    /// The VAE `Downsample`'s asymmetric padding: one zero column right, one zero row below (BFL
    /// `Downsample`, src/flux/modules/autoencoder.py @ 802fb47).
    pub const DOWNSAMPLE: Padding = Padding { left: 0, right: 1, top: 0, bottom: 1 };
}

/// Geometry of one convolution; the kernel size comes from the weight's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub padding: Padding,
    /// Upsample the input ×2 (nearest) before convolving, without materialising it (BFL `Upsample`,
    /// src/flux/modules/autoencoder.py @ 802fb47).
    pub upsample: bool,
    /// Then `max(·, 0)` on the result (bias and residual included): the tiny decoder's ReLU
    /// (`model::taef1`), fused into the store.
    pub relu: bool,
}

impl Conv2d {
    /// Stride 1, the same padding on all sides.
    pub const fn same(pad: usize) -> Conv2d {
        Conv2d { stride: 1, padding: Padding::uniform(pad), upsample: false, relu: false }
    }

    /// The same convolution followed by a ReLU.
    pub const fn then_relu(self) -> Conv2d {
        Conv2d { relu: true, ..self }
    }

    /// The VAE encoder's `Downsample` conv: pad (0, 1, 0, 1), 3×3, stride 2.
    pub const DOWNSAMPLE: Conv2d = Conv2d { stride: 2, padding: Padding::DOWNSAMPLE, upsample: false, relu: false };

    /// The VAE decoder's `Upsample`: nearest ×2, then 3×3 conv with padding 1.
    pub const UPSAMPLE: Conv2d = Conv2d { stride: 1, padding: Padding::uniform(1), upsample: true, relu: false };

    /// Output `(height, width)` for an input of `h × w` and a `kh × kw` kernel:
    /// `(H' + top + bottom − kh) / stride + 1`, with `H' = 2H` when upsampling. `None` when the padded
    /// input is smaller than the kernel or the stride is 0.
    pub fn output_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let f = if self.upsample { 2 } else { 1 };
        let (ph, pw) = (h * f + self.padding.top + self.padding.bottom, w * f + self.padding.left + self.padding.right);
        if self.stride == 0 || kh == 0 || kw == 0 || ph < kh || pw < kw {
            return None;
        }
        Some(((ph - kh) / self.stride + 1, (pw - kw) / self.stride + 1))
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_left: u32,
    pad_top: u32,
    up_shift: u32,
    k0: u32,
    ktot: u32,
    o0: u32,
    x_off: u32,
    w_off: u32,
    res_off: u32,
    y_off: u32,
    accumulate: u32,
    relu: u32,
    _pad: [u32; 3],
}

/// Each invocation computes 4 output channels × 4 output pixels (fixed in the shader).
const BLOCK: u32 = 4;

/// Workgroup tilings: (WGO, WGP, TK), 128 invocations. `WIDE` (32 channels × 64 pixels, 6 KiB of
/// workgroup memory) for the VAE's 128–512-channel convs; `SMALL` (16 channels × 128 pixels, 9 KiB) for
/// few output channels (the 3-channel `conv_out`), where a wide tile would compute mostly padding.
/// The shader needs WGO to be a multiple of 4 (see its header).
const WIDE: (u32, u32, u32) = (8, 16, 16);
const SMALL: (u32, u32, u32) = (4, 32, 16);
const FORMATS: [DType; 2] = [DType::F32, DType::F16];
/// Kernel sizes compiled with constant KH = KW (cheaper index arithmetic); 0 = any size, from the uniforms.
const FIXED_KERNELS: [u32; 2] = [1, 3];

fn overrides(tile: (u32, u32, u32), format: DType, residual: bool, kernel: (u32, u32)) -> Vec<(&'static str, f64)> {
    vec![
        ("WGO", tile.0 as f64),
        ("WGP", tile.1 as f64),
        ("TK", tile.2 as f64),
        ("FORMAT", format.shader_id() as f64),
        ("RESIDUAL", if residual { 1.0 } else { 0.0 }),
        ("KH", kernel.0 as f64),
        ("KW", kernel.1 as f64),
    ]
}

/// The (KH, KW) overrides for a kernel: fixed for the sizes the VAE uses, else read at run time.
fn kernel_override(kh: usize, kw: usize) -> (u32, u32) {
    match FIXED_KERNELS.iter().find(|&&k| k as usize == kh && kh == kw) {
        Some(&k) => (k, k),
        None => (0, 0),
    }
}

pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for tile in [WIDE, SMALL] {
        for format in FORMATS {
            for residual in [false, true] {
                for k in FIXED_KERNELS.into_iter().chain([0]) {
                    v.push(Variant::new("conv2d", &overrides(tile, format, residual, (k, k))));
                }
            }
        }
    }
    v
}

/// `[C, H, W]` (or `[1, C, H, W]`) → (C, H, W).
fn image_dims(op: &'static str, t: &Tensor) -> Result<(usize, usize, usize)> {
    match *t.shape() {
        [c, h, w] | [1, c, h, w] if c * h * w > 0 => Ok((c, h, w)),
        _ => Err(shape_err(op, "a non-empty image [C, H, W] or [1, C, H, W]", t.shape())),
    }
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{what} < 2^32"), v))
}

/// `conv(x) + bias`, plus `residual` when given (same shape as the output).
///
/// `x`: F32 `[C, H, W]` or `[1, C, H, W]`; `weight`: F32 or F16 `[O, C, kh, kw]` (PyTorch layout);
/// `bias`: F32 `[O]`. Returns F32 `[O, Ho, Wo]` with the rank of `x`, sizes from [`Conv2d::output_size`].
/// Tensors larger than one storage binding (a 128-channel 1024² activation is 512 MiB) are split
/// into runs of whole channels, each bound as its own range (see `split`): output-channel chunks are
/// separate dispatches, input-channel chunks accumulate into the output. Only one channel plane
/// (plus 256 bytes) must fit a binding. Measured at the VAE decoder's 3×3 convs: ~13 TFLOP/s f32 on an H200 (Vulkan).
pub fn conv2d(
    gpu: &Gpu,
    batch: &mut Batch,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    conv: Conv2d,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    expect_f32(OP, x)?;
    expect_f32(OP, bias)?;
    if !FORMATS.contains(&weight.dtype()) {
        return Err(Error::UnsupportedFormat {
            op: OP,
            format: weight.dtype().to_string(),
            why: "conv2d weights must be F32 or F16 (dequantize others first)".into(),
        });
    }
    let (cin, h, w) = image_dims(OP, x)?;
    let (cout, kh, kw) = match *weight.shape() {
        [o, i, kh, kw] if i == cin && o > 0 => (o, kh, kw),
        _ => {
            return Err(shape_err(
                OP,
                format!("weight [O, {cin}, kh, kw] for an input of {cin} channels"),
                weight.shape(),
            ))
        }
    };
    if bias.shape() != [cout] {
        return Err(shape_err(OP, format!("bias [{cout}]"), bias.shape()));
    }
    let (ho, wo) = conv.output_size(h, w, kh, kw).ok_or_else(|| {
        shape_err(OP, format!("a stride ≥ 1 and a padded input at least {kh}×{kw} ({conv:?})"), x.shape())
    })?;
    let out_shape: Vec<usize> = if x.shape().len() == 4 { vec![1, cout, ho, wo] } else { vec![cout, ho, wo] };
    if let Some(r) = residual {
        expect_f32(OP, r)?;
        if image_dims(OP, r)? != (cout, ho, wo) {
            return Err(shape_err(OP, format!("residual [{cout}, {ho}, {wo}]"), r.shape()));
        }
    }
    let pad = conv.padding;
    let base = Params {
        cin: u32_of(OP, "channels", cin)?,
        h: u32_of(OP, "height", h)?,
        w: u32_of(OP, "width", w)?,
        cout: u32_of(OP, "output channels", cout)?,
        ho: u32_of(OP, "output height", ho)?,
        wo: u32_of(OP, "output width", wo)?,
        kh: kh as u32,
        kw: kw as u32,
        stride: u32_of(OP, "stride", conv.stride)?,
        pad_left: u32_of(OP, "padding", pad.left)?,
        pad_top: u32_of(OP, "padding", pad.top)?,
        up_shift: conv.upsample as u32,
        ktot: u32_of(OP, "weight row", cin * kh * kw)?,
        ..Params::zeroed()
    };
    u32_of(OP, "output elements", cout * ho * wo)?;
    u32_of(OP, "weight elements", weight.numel())?;
    u32_of(OP, "input elements (upsampled)", cin * h * w * 4)?;

    // Channel chunks (see `split`): input planes, output planes (+ residual) and weight rows.
    let welem = weight.dtype().gpu_bytes(2) / 2; // bytes per weight element (F32 4, F16 2)
    let wrow = welem * cin * kh * kw;
    let (ci_chunk, co_chunk) = split(gpu, (cin, h * w * 4), (cout, (ho * wo * 4).max(wrow)))?;
    let tile = fit_tile(gpu, if cout <= 16 { SMALL } else { WIDE })?;
    let y = gpu.empty(&out_shape, DType::F32)?;
    let ov = overrides(tile, weight.dtype(), residual.is_some(), kernel_override(kh, kw));
    let (plane_in, plane_out) = (h * w, ho * wo);
    for o0 in (0..cout).step_by(co_chunk) {
        let oc = co_chunk.min(cout - o0);
        let grid = [plane_out.div_ceil((tile.1 * BLOCK) as usize), oc.div_ceil((tile.0 * BLOCK) as usize), 1];
        let grid = grid.map(|g| g.min(u32::MAX as usize) as u32);
        for c0 in (0..cin).step_by(ci_chunk) {
            let cc = ci_chunk.min(cin - c0);
            let (xb, x_off) = span(gpu, x, c0 * plane_in * 4, cc * plane_in * 4);
            let (yb, y_off) = span(gpu, &y, o0 * plane_out * 4, oc * plane_out * 4);
            let (wb, w_off) = span(gpu, weight, o0 * wrow, oc * wrow);
            let (rb, res_off) = match residual {
                Some(r) => span(gpu, r, o0 * plane_out * 4, oc * plane_out * 4),
                // The shader declares the residual binding in every variant; without one, any
                // read-only buffer stands in (it is never read).
                None => (Binding::Tensor(bias), 0),
            };
            let params = Params {
                cin: cc as u32,
                cout: oc as u32,
                k0: (c0 * kh * kw) as u32,
                o0: o0 as u32,
                x_off: (x_off / 4) as u32,
                w_off: (w_off / welem as u64) as u32,
                res_off: (res_off / 4) as u32,
                y_off: (y_off / 4) as u32,
                accumulate: (c0 > 0) as u32,
                // After the last input chunk's sum only: ReLU of a partial sum is not a ReLU.
                relu: (conv.relu && c0 + cc == cin) as u32,
                ..base
            };
            batch.dispatch(
                gpu,
                &SHADER,
                "conv2d",
                &ov,
                &[Binding::Uniform(bytemuck::bytes_of(&params)), xb, wb, Binding::Tensor(bias), rb, yb],
                grid,
            )?;
        }
    }
    Ok(y)
}

/// The bytes `[byte0, byte0 + bytes)` of `t` as a binding: the whole buffer when it fits one storage
/// binding (offset 0), else a range starting at the aligned offset at or below `byte0`. Returns the
/// binding and the byte offset of `byte0` inside it (`byte0` itself, or < the offset alignment).
/// Callers check that element offsets fit u32 (the shaders index with u32).
pub(crate) fn span<'a>(gpu: &Gpu, t: &'a Tensor, byte0: usize, bytes: usize) -> (Binding<'a>, u64) {
    let info = gpu.info();
    let total = t.buffer().size();
    if total <= info.max_storage_binding {
        return (Binding::Tensor(t), byte0 as u64);
    }
    let align = info.storage_offset_alignment.max(4) as u64;
    let start = byte0 as u64 / align * align;
    let lead = byte0 as u64 - start;
    let size = ((lead + bytes as u64).div_ceil(4) * 4).min(total - start);
    (Binding::Range(t, start, size), lead)
}

/// Channels per dispatch for the input (`(channels, bytes per channel)`) and the output (bytes per
/// output channel: the larger of its plane and its weight row). Every operand is laid out channel-major,
/// so a run of whole channels is one contiguous byte range: a chunk of `n` channels binds
/// `n · bytes + < alignment` bytes ([`span`]). Whole extents when every tensor fits one binding.
/// Input chunks accumulate into the output (`accumulate`), so only one plane must fit a binding.
fn split(gpu: &Gpu, (cin, in_bytes): (usize, usize), (cout, out_bytes): (usize, usize)) -> Result<(usize, usize)> {
    let info = gpu.info();
    let limit = info.max_storage_binding as usize;
    let room = limit.saturating_sub(info.storage_offset_alignment as usize);
    let fit = |n: usize, per: usize, what: &str| -> Result<usize> {
        if n * per <= limit {
            return Ok(n);
        }
        match room / per {
            0 => Err(Error::LimitExceeded {
                what: format!("conv2d: one {what} channel in a storage binding"),
                needed: per as u64,
                available: room as u64,
            }),
            k => Ok(k.min(n)),
        }
    };
    Ok((fit(cin, in_bytes, "input")?, fit(cout, out_bytes, "output")?))
}

/// Shrinks a tile's workgroup (pixels first; channels down to the 4 the shader needs) until it fits
/// the device's invocation limit.
fn fit_tile(gpu: &Gpu, (mut wgo, mut wgp, tk): (u32, u32, u32)) -> Result<(u32, u32, u32)> {
    let cap = gpu.workgroup_size(wgo * wgp);
    while wgo * wgp > cap && wgp > 1 {
        wgp /= 2;
    }
    while wgo * wgp > cap && wgo > 4 {
        wgo /= 2;
    }
    if wgo * wgp > cap {
        return Err(Error::LimitExceeded {
            what: "conv2d: invocations per workgroup".into(),
            needed: 4,
            available: cap as u64,
        });
    }
    Ok((wgo, wgp, tk))
}
