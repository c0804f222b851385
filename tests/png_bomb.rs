//! A PNG whose header declares 16000×16000 RGBA16 (2 GB of pixels) in a file of a few hundred
//! bytes is refused from its header, without a large allocation. This binary has one test and a
//! counting global allocator that records the largest single allocation, so the assertion sees
//! what `recipe_from_png` asked for (zero pages from `calloc` would not show in the process's
//! memory, and a refused decode returns quickly either way).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use iclora::error::Error;
use iclora::recipe::png::recipe_from_png;

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A valid-looking PNG (right CRCs) declaring `width`×`height` at 16-bit RGBA, with a tiny IDAT
/// (an empty zlib stream) and IEND.
fn bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[16, 6, 0, 0, 0]); // 16 bits, RGBA, deflate, adaptive, not interlaced
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &miniz_oxide::deflate::compress_to_vec_zlib(&[], 6));
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn a_png_bomb_is_refused_from_its_header() {
    let file = bomb(16000, 16000);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds/png_recipe/regress-bomb-16000x16000-rgba16.png");
    assert_eq!(std::fs::read(&path).unwrap(), file, "the committed regression file is this bomb");
    LARGEST.store(0, Ordering::Relaxed);
    let start = std::time::Instant::now();
    let result = recipe_from_png("bomb.png", &file);
    let (largest, secs) = (LARGEST.load(Ordering::Relaxed), start.elapsed().as_secs_f64());
    match result {
        Err(Error::FileLimit { file, what, found, .. }) => {
            assert_eq!(
                (file.as_str(), what.as_str(), found),
                ("bomb.png", "decoded image size (bytes)", 2_048_000_000)
            );
        }
        other => panic!("expected Error::FileLimit, got {other:?}"),
    }
    assert!(largest < 1 << 20, "the refused PNG still allocated {largest} bytes at once");
    assert!(secs < 1.0, "refusing took {secs} s");
    // The same check from the first bytes only, for images other decoders will read.
    let prefix = &file[..iclora::recipe::png::HEADER_PREFIX];
    let result = iclora::recipe::png::check_image_prefix("bomb.png", prefix);
    assert!(matches!(&result, Err(Error::FileLimit { found: 2_048_000_000, .. })), "{result:?}");
    assert!(iclora::recipe::png::check_image_prefix("small.png", &bomb(64, 64)[..33]).is_ok());
    assert!(iclora::recipe::png::check_image_prefix("photo.jpg", b"\xff\xd8\xff\xe0 not a png").is_ok());
    // Over the side cap: 100000 × 1.
    let result = recipe_from_png("wide.png", &bomb(100_000, 1));
    assert!(matches!(&result, Err(Error::FileLimit { found: 100_000, .. })), "{result:?}");
    assert!(LARGEST.load(Ordering::Relaxed) < 1 << 20);
}
