// Tile arithmetic type for matmul-like kernels: f16 products, f32 accumulation.
// Used only where the adapter has `shader-f16`; must come first in the program.
enable f16;
alias tile_t = f16;
