// Tile arithmetic type for matmul-like kernels: f32 (every adapter). See precision_f16.wgsl.
alias tile_t = f32;
