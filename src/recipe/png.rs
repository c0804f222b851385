//! PNGs that carry their recipe: the canonical recipe JSON in a `tEXt` chunk with keyword
//! [`KEYWORD`], so dropping a generated image on the page restores its form.
//!
//! `tEXt` is Latin-1, so every non-ASCII character of the JSON is written as a `\uXXXX` escape
//! (UTF-16 units, surrogate pairs above U+FFFF): the text stays pure ASCII and still valid JSON
//! for any reader, ours or a script's.

use super::Recipe;
use crate::error::{Error, Result};
use crate::limits::{PNG_DECODED_BYTES, PNG_METADATA_BYTES, PNG_SIDE, RECIPE_TEXT_BYTES};

/// The `tEXt` keyword (1–79 Latin-1 bytes per the PNG spec).
pub const KEYWORD: &str = "iclora-recipe";

fn bad(why: impl std::fmt::Display) -> Error {
    Error::BadImage { format: "PNG", why: why.to_string() }
}

/// `json` with every non-ASCII character replaced by its JSON `\uXXXX` escape(s). Valid because
/// JSON's structural characters are ASCII, so non-ASCII only occurs inside strings.
pub fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        }
    }
    out
}

/// Encodes 8-bit RGB pixels (`[height, width, 3]`, rows top to bottom) as a PNG, with the recipe
/// in a `tEXt` chunk when one is given.
pub fn encode_png(width: u32, height: u32, rgb: &[u8], recipe: Option<&Recipe>) -> Result<Vec<u8>> {
    let expected = width as usize * height as usize * 3;
    if width == 0 || height == 0 || rgb.len() != expected {
        return Err(Error::ShapeMismatch {
            op: "encode_png",
            expected: format!("{width}×{height}×3 = {expected} bytes (non-empty)"),
            got: format!("{} bytes", rgb.len()),
        });
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    if let Some(r) = recipe {
        enc.add_text_chunk(KEYWORD.to_string(), ascii_json(&r.to_json()?)).map_err(bad)?;
    }
    let mut writer = enc.write_header().map_err(bad)?;
    writer.write_image_data(rgb).map_err(bad)?;
    writer.finish().map_err(bad)?;
    Ok(out)
}

/// [`encode_png`] for an image of the pipeline: the one PNG writer of the studio and the CLI.
pub fn encode_image(img: &crate::pipeline::image::RgbImage, recipe: Option<&Recipe>) -> Result<Vec<u8>> {
    let side = |v: usize| {
        u32::try_from(v)
            .map_err(|_| Error::InvalidArgument(format!("image {}×{} is too large for PNG", img.width, img.height)))
    };
    encode_png(side(img.width)?, side(img.height)?, &img.pixels, recipe)
}

/// Refuses (`Error::FileLimit`, naming `file`) an image whose header declares more pixels than
/// `crate::limits` allows: checked from the IHDR chunk, before any pixel is decoded or allocated.
pub fn check_png_header(file: &str, info: &png::Info) -> Result<()> {
    PNG_SIDE.check(file, info.width.into())?;
    PNG_SIDE.check(file, info.height.into())?;
    let samples = info.color_type.samples() as u64 * info.bit_depth as u64;
    let bytes = u64::from(info.width) * u64::from(info.height) * samples.div_ceil(8);
    PNG_DECODED_BYTES.check(file, bytes)
}

/// Bytes from the start of a PNG through its IHDR chunk (signature, length, type, 13 bytes, CRC):
/// enough for [`check_image_prefix`].
pub const HEADER_PREFIX: usize = 33;

/// For an image about to be handed to another decoder (the browser's, for reference panels): when
/// `prefix` (its first [`HEADER_PREFIX`] bytes) is a PNG's, checks its IHDR as
/// [`check_png_header`] does; other formats pass (their decoders have their own limits).
pub fn check_image_prefix(file: &str, prefix: &[u8]) -> Result<()> {
    if !prefix.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(());
    }
    let mut decoder = png::Decoder::new(std::io::Cursor::new(prefix));
    check_png_header(file, decoder.read_header_info().map_err(bad)?)
}

/// The recipe in a PNG called `file` (in errors): `Ok(None)` for a valid PNG without one, an error
/// for a file that is not a readable PNG (the whole image is decoded, so truncation or corrupt data
/// is caught) or whose recipe does not parse or validate. Memory stays small whatever the file
/// claims: the header's dimensions are checked before decoding, rows are decoded one at a time
/// into the decoder's row buffer, and text chunks are bounded by the decoder's limit.
pub fn recipe_from_png(file: &str, bytes: &[u8]) -> Result<Option<Recipe>> {
    let limits = png::Limits { bytes: PNG_METADATA_BYTES as usize };
    let mut decoder = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    check_png_header(file, decoder.read_header_info().map_err(bad)?)?;
    let mut reader = decoder.read_info().map_err(|e| match e {
        png::DecodingError::LimitsExceeded => {
            bad(format!("`{file}` holds more than {PNG_METADATA_BYTES} bytes of text or metadata"))
        }
        e => bad(e),
    })?;
    while reader.next_row().map_err(bad)?.is_some() {}
    // Text chunks after the image data are read by `finish`.
    reader.finish().map_err(bad)?;
    let info = reader.info();
    match info.uncompressed_latin1_text.iter().find(|c| c.keyword == KEYWORD) {
        Some(chunk) => {
            RECIPE_TEXT_BYTES.check(file, chunk.text.len() as u64)?;
            Recipe::from_json(&chunk.text).map(Some)
        }
        None => Ok(None),
    }
}
