"""Peer figures for `iclora bench kernels` on an NVIDIA GPU: PyTorch matmul and
SDPA at the same FLUX shapes on the same card, in the same run.

fp32 with TF32 disabled is the card's plain-FMA ceiling in practice (what our
WGSL kernels can reach without matrix units); bf16 is what diffusers runs.
Prints lines in the same shape as `iclora bench kernels`.
"""
import sys
import torch

def median_ms(fn, iters=10):
    fn(); torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]

def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(f"peer torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    m, k = max(1, round(4608 * scale)), 3072
    for n in (3072, 12288):
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            x = torch.randn(m, k, device=dev, dtype=dt)
            w = torch.randn(n, k, device=dev, dtype=dt)
            ms = median_ms(lambda: torch.nn.functional.linear(x, w))
            print(f"torch-matmul {name:<6} {m}x{k}->{n:<8} median_ms={ms:10.3f} gflops={2*m*n*k/ms/1e6:9.2f}")
    h, d = 24, 128
    for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        q, kk, v = (torch.randn(1, h, m, d, device=dev, dtype=dt) for _ in range(3))
        ms = median_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, kk, v))
        print(f"torch-sdpa   {name:<6} {m}tok x{h}h x{d}     median_ms={ms:10.3f} gflops={4*m*m*h*d/ms/1e6:9.2f}")

if __name__ == "__main__":
    main()
