//! shaders/embedding.wgsl against reference::embedding, for every weight format.
//! Tolerance 0: a gather copies dequantized values, so they must be bit-identical
//! to the reference dequantization of the same bytes.

mod common;
use common::{assert_close, gpu, run, Rng};
use iclora::gpu::DType;
use iclora::kernels::embedding::{dequantize as gpu_dequantize, embedding};
use iclora::reference::embedding as reference;
use iclora::reference::quant::dequantize;
use iclora::reference::random::weight_bytes;
use iclora::weights::repack::repack;

fn table_bytes(rng: &mut Rng, dtype: DType, numel: usize) -> Vec<u8> {
    weight_bytes(rng, dtype, numel, 2.0, 0.1)
}

#[test]
fn gather_matches_reference_for_every_format() {
    let mut rng = Rng::new(21);
    for dtype in DType::WEIGHT_FORMATS {
        // Awkward vocab / id counts; widths: a block, and T5's 4096.
        for (vocab, k, n) in [(1, 256, 1), (7, 256, 9), (33, 4096, 5)] {
            let k = if dtype.is_quantized() { k } else { k - 1 }; // odd widths for plain formats
            let bytes = table_bytes(&mut rng, dtype, vocab * k);
            let values = dequantize(dtype, &bytes).unwrap();
            let ids: Vec<u32> =
                (0..n).map(|i| if i == n - 1 && n > 1 { vocab as u32 + 3 } else { rng.below(vocab) as u32 }).collect();
            let got = run(|g, b| {
                let t = g.upload_raw(&[vocab, k], dtype, &repack(dtype, &bytes)?)?;
                embedding(g, b, &t, &g.upload_u32(&[n], &ids)?)
            });
            assert_close(
                &format!("gather {dtype} vocab {vocab} k {k} n {n}"),
                &got,
                &reference::embedding(&values, k, &ids),
                0.0,
            );
        }
        let bytes = table_bytes(&mut rng, dtype, 3 * 256);
        let got = run(|g, b| gpu_dequantize(g, b, &g.upload_raw(&[3, 256], dtype, &repack(dtype, &bytes)?)?));
        assert_close(&format!("dequantize {dtype}"), &got, &dequantize(dtype, &bytes).unwrap(), 0.0);
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let g = gpu();
    let mut b = g.batch();
    let table = g.upload_f32(&[4, 8], &[0.0; 32]).unwrap();
    let float_ids = g.upload_f32(&[2], &[0.0, 1.0]).unwrap();
    assert!(matches!(embedding(g, &mut b, &table, &float_ids), Err(iclora::Error::UnsupportedFormat { .. })));
    let flat = g.upload_f32(&[32], &[0.0; 32]).unwrap();
    let ids = g.upload_u32(&[1], &[0]).unwrap();
    assert!(matches!(embedding(g, &mut b, &flat, &ids), Err(iclora::Error::ShapeMismatch { .. })));
}
