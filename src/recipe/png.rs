//! PNGs that carry their recipe: the canonical recipe JSON in a `tEXt` chunk with keyword
//! [`KEYWORD`], so dropping a generated image on the page restores its form.
//!
//! `tEXt` is Latin-1, so every non-ASCII character of the JSON is written as a `\uXXXX` escape
//! (UTF-16 units, surrogate pairs above U+FFFF): the text stays pure ASCII and still valid JSON
//! for any reader, ours or a script's.

use super::Recipe;
use crate::error::{Error, Result};

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

/// The recipe in a PNG: `Ok(None)` for a valid PNG without one, an error for a file that is not a
/// readable PNG (the whole image is decoded, so truncation or corrupt data is caught) or whose
/// recipe does not parse or validate.
pub fn recipe_from_png(bytes: &[u8]) -> Result<Option<Recipe>> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().map_err(bad)?;
    let size = reader.output_buffer_size().ok_or_else(|| bad("the image is too large"))?;
    let mut buf = vec![0u8; size];
    reader.next_frame(&mut buf).map_err(bad)?;
    // Text chunks after the image data are read by `finish`.
    reader.finish().map_err(bad)?;
    let info = reader.info();
    match info.uncompressed_latin1_text.iter().find(|c| c.keyword == KEYWORD) {
        Some(chunk) => Recipe::from_json(&chunk.text).map(Some),
        None => Ok(None),
    }
}
