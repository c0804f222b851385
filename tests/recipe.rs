//! Recipes: validation, share links, PNG metadata, ZIP archives, presets, latent previews.
//! Pure CPU; the ZIP test also unzips with Python's `zipfile` when `python3` is on PATH.

use iclora::error::Error;
use iclora::pipeline::preview::{latent_preview, FLUX_LATENT_RGB_BIAS, FLUX_LATENT_RGB_FACTORS};
use iclora::recipe::presets::{build_prompt, model_presets, split_prompt, task_preset, task_presets};
use iclora::recipe::png::{encode_png, recipe_from_png, KEYWORD};
use iclora::recipe::share::{base64url_decode, base64url_encode, from_fragment, to_fragment};
use iclora::recipe::zip::zip;
use iclora::recipe::{check_url, url_host, Adapter, ModelSource, ModelUrls, Recipe, RECIPE_VERSION};
use iclora::reference::pack::pack;

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn film(model: &str) -> Recipe {
    task_preset("film-storyboard").unwrap().example_recipe(ModelSource::Preset(model.into()), 42)
}

/// A recipe exercising everything: custom model, two adapters, Unicode, extreme seed, an f32
/// guidance that is not exact in decimal.
fn rich() -> Recipe {
    let mut r = film("flux-dev-q4_0");
    r.model = ModelSource::Custom(ModelUrls {
        root: Some("https://example.org:8443/models/flux-dev".into()),
        t5: Some("https://CDN.Example.com/t5.gguf?download=true".into()),
        ..Default::default()
    });
    r.adapters.push(Adapter { url: "http://user@lora.example.net/ü.safetensors".into(), scale: -0.35 });
    r.captions.overall = "Ein Fest 🎆 — «天空» \"quoted\" \\ back".into();
    r.captions.panels[1] = "<Léa> 😀 in 北京, tab\there".into();
    r.prompt = "edited by hand: 🎆 «天空» <Léa>\nnew line".into();
    r.seed = u64::MAX;
    r.guidance = 0.1;
    r.references_used = true;
    r
}

type Mutation = Box<dyn Fn(&mut Recipe)>;

fn field_of(e: Error) -> String {
    match e {
        Error::InvalidRecipe { field, .. } => field,
        other => panic!("expected InvalidRecipe, got {other:?}"),
    }
}

#[test]
fn validation_names_the_bad_field() {
    rich().validate().unwrap();
    let cases: Vec<(&str, Mutation)> = vec![
        ("width", Box::new(|r| r.width = 1000)),
        ("width", Box::new(|r| r.width = 8192)),
        ("height", Box::new(|r| r.height = 0)),
        ("width×height", Box::new(|r| (r.width, r.height) = (4096, 4096))),
        ("steps", Box::new(|r| r.steps = 0)),
        ("steps", Box::new(|r| r.steps = 101)),
        ("guidance", Box::new(|r| r.guidance = f32::NAN)),
        ("guidance", Box::new(|r| r.guidance = f32::INFINITY)),
        ("adapters[0].url", Box::new(|r| r.adapters[0].url = "ftp://x.org/a.safetensors".into())),
        ("adapters[0].url", Box::new(|r| r.adapters[0].url = "javascript:alert(1)".into())),
        ("adapters[0].url", Box::new(|r| r.adapters[0].url = "lora.safetensors".into())),
        ("adapters[0].url", Box::new(|r| r.adapters[0].url = "https://a.org/x y".into())),
        ("adapters[0].scale", Box::new(|r| r.adapters[0].scale = f32::NAN)),
        ("layout", Box::new(|r| r.layout.rows = 5)),
        ("layout.cols", Box::new(|r| r.layout.cols = 0)),
        ("captions.panels", Box::new(|r| { r.captions.panels.pop(); })),
        ("model", Box::new(|r| r.model = ModelSource::Preset("no-such-model".into()))),
        ("model", Box::new(|r| r.model = ModelSource::Custom(ModelUrls::default()))),
        ("model.vae", Box::new(|r| r.model = ModelSource::Custom(ModelUrls { root: Some("https://a.org/m".into()), vae: Some("file:///etc/passwd".into()), ..Default::default() }))),
        ("sampler", Box::new(|r| r.sampler = "dpm++".into())),
        ("task", Box::new(|r| r.task = Some("../x".into()))),
        ("prompt", Box::new(|r| r.prompt = "x".repeat(20_000))),
    ];
    for (field, mutate) in cases {
        let mut r = film("flux-dev-q4_0");
        mutate(&mut r);
        assert_eq!(field_of(r.validate().unwrap_err()), field);
    }
    let mut r = film("tiny");
    r.version = RECIPE_VERSION + 1;
    assert!(matches!(r.validate(), Err(Error::RecipeVersion { found, .. }) if found == RECIPE_VERSION + 1));
}

#[test]
fn share_links_round_trip() {
    let mut recipes = vec![rich(), film("tiny")];
    for t in task_presets().unwrap() {
        recipes.push(t.example_recipe(ModelSource::Preset("flux-dev-fp8".into()), 7));
    }
    for r in &recipes {
        let frag = to_fragment(r).unwrap();
        assert!(frag.starts_with("#r="));
        assert!(frag.bytes().all(|b| b.is_ascii_alphanumeric() || b"#=-_".contains(&b)), "{frag}");
        assert_eq!(&from_fragment(&frag).unwrap(), r);
        // A whole URL with other parameters around the recipe.
        let url = format!("https://app.example/?x=1{}&theme=dark", frag.replacen("#r=", "#v=2&r=", 1));
        assert_eq!(&from_fragment(&url).unwrap(), r);
    }
    // Compact: the film storyboard example (≈ 450 characters of prompt, repeated in the captions).
    let len = to_fragment(&film("flux-dev-q4_0")).unwrap().len();
    assert!(len < 900, "link is {len} characters");
    // Invalid recipes are refused rather than shared.
    let mut bad = film("tiny");
    bad.steps = 0;
    assert!(to_fragment(&bad).is_err());
}

#[test]
fn damaged_share_links_are_typed_errors() {
    let good = to_fragment(&rich()).unwrap();
    for cut in [4, good.len() / 3, good.len() / 2, good.len() - 3, good.len() - 1] {
        let e = from_fragment(&good[..cut]).unwrap_err();
        assert!(matches!(e, Error::BadShareLink(_)), "cut at {cut}: {e:?}");
    }
    for s in ["", "#", "#r=", "#x=abc", "#r=!!!!", "#r=AAAA", "#r=a", "#r=%20AB"] {
        assert!(matches!(from_fragment(s), Err(Error::BadShareLink(_))), "{s:?}");
    }
    // Random data, raw or deflated: errors of any kind, never a panic.
    let mut rng = Rng(0x5eed);
    for i in 0..300 {
        let data = rng.bytes(1 + i % 97);
        let data = if i % 2 == 0 { data } else { miniz_oxide::deflate::compress_to_vec(&data, 6) };
        assert!(from_fragment(&format!("#r={}", base64url_encode(&data))).is_err());
    }
    // Valid JSON that is not a recipe, and a newer format version.
    let enc = |json: &str| format!("#r={}", base64url_encode(&miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 9)));
    assert!(matches!(from_fragment(&enc("{\"a\":1}")), Err(Error::BadShareLink(_))));
    assert!(matches!(from_fragment(&enc("[1,\"tiny\"]")), Err(Error::BadShareLink(_))));
    assert!(matches!(from_fragment(&enc("[2,\"future\"]")), Err(Error::RecipeVersion { found: 2, supported: 1 })));
}

#[test]
fn base64url_matches_rfc4648() {
    // RFC 4648 §10 vectors, without padding.
    for (plain, enc) in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")] {
        assert_eq!(base64url_encode(plain.as_bytes()), enc);
        assert_eq!(base64url_decode(enc).unwrap(), plain.as_bytes());
    }
    assert_eq!(base64url_encode(&[0xfb, 0xff, 0xbf]), "-_-_");
    assert_eq!(base64url_decode("Zm8=").unwrap(), b"fo");
    let mut rng = Rng(3);
    for n in 0..40 {
        let b = rng.bytes(n);
        assert_eq!(base64url_decode(&base64url_encode(&b)).unwrap(), b);
    }
    // Non-canonical trailing bits, a cut-off length, characters of the other alphabet.
    for bad in ["Zh", "Zm9", "Z", "Zm9vY", "Zm9+", "Zm9/"] {
        assert!(base64url_decode(bad).is_err(), "{bad}");
    }
}

#[test]
fn hosts_lists_distinct_download_hosts() {
    assert_eq!(film("flux-dev-q4_0").hosts(), vec!["huggingface.co"]);
    // The bundled model is same-origin: only the adapter's host remains.
    assert_eq!(film("tiny").hosts(), vec!["huggingface.co"]);
    assert_eq!(rich().hosts(), vec!["cdn.example.com", "example.org:8443", "huggingface.co", "lora.example.net"]);
    assert_eq!(url_host("HTTPS://Sub.Example.ORG/a?b#c").as_deref(), Some("sub.example.org"));
    assert_eq!(url_host("https://u:p@h.io:1/x").as_deref(), Some("h.io:1"));
    for bad in ["https://", "https:///x", "http://:80/", "mailto:a@b.c", "tiny-flux/", "//h.io/x"] {
        assert_eq!(url_host(bad), None, "{bad}");
        assert!(check_url("u", bad).is_err());
    }
}

fn png_pixels(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    (info.width, info.height, buf)
}

#[test]
fn png_carries_the_recipe() {
    let mut rng = Rng(11);
    let (w, h) = (7u32, 5u32);
    let rgb = rng.bytes((w * h * 3) as usize);
    let recipe = rich();
    let bytes = encode_png(w, h, &rgb, Some(&recipe)).unwrap();
    assert_eq!(png_pixels(&bytes), (w, h, rgb.clone()));
    assert_eq!(recipe_from_png("test.png", &bytes).unwrap(), Some(recipe.clone()));
    // The chunk is ASCII JSON that any JSON reader parses to the same recipe.
    let r = png::Decoder::new(std::io::Cursor::new(&bytes[..])).read_info().unwrap();
    let chunk = r.info().uncompressed_latin1_text.iter().find(|c| c.keyword == KEYWORD).unwrap();
    assert!(chunk.text.is_ascii() && chunk.text.contains("\\ud83c\\udf86"), "{}", chunk.text);
    assert_eq!(serde_json::from_str::<Recipe>(&chunk.text).unwrap(), recipe);

    let plain = encode_png(w, h, &rgb, None).unwrap();
    assert_eq!(recipe_from_png("test.png", &plain).unwrap(), None);
    assert!(matches!(encode_png(w, h, &rgb[1..], None), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn corrupt_pngs_are_typed_errors() {
    let rgb = Rng(5).bytes(16 * 16 * 3);
    let bytes = encode_png(16, 16, &rgb, Some(&film("tiny"))).unwrap();
    let is_bad_image = |b: &[u8]| matches!(recipe_from_png("test.png", b), Err(Error::BadImage { format: "PNG", .. }));
    for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 13] {
        assert!(is_bad_image(&bytes[..cut]), "cut at {cut}");
    }
    assert!(is_bad_image(b"GIF89a not a png at all"));
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 40] ^= 0x55; // inside IDAT: CRC mismatch
    assert!(is_bad_image(&flipped));
    // A well-formed PNG whose recipe chunk is not a valid recipe.
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 1, 1);
    enc.set_color(png::ColorType::Rgb);
    enc.add_text_chunk(KEYWORD.into(), "{\"version\":1,\"steps\":0}".into()).unwrap();
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(&[1, 2, 3]).unwrap();
    wr.finish().unwrap();
    assert!(matches!(recipe_from_png("test.png", &out), Err(Error::InvalidRecipe { .. })));
}

/// Parses a ZIP from its end-of-central-directory record, checking every field this writer sets.
fn read_zip(z: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |o: usize| u16::from_le_bytes([z[o], z[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(z[o..o + 4].try_into().unwrap());
    let end = z.len() - 22;
    assert_eq!(u32_at(end), 0x0605_4b50);
    let (count, cd_size, cd_off) = (u16_at(end + 10) as usize, u32_at(end + 12) as usize, u32_at(end + 16) as usize);
    assert_eq!(cd_off + cd_size, end);
    let mut out = Vec::new();
    let mut p = cd_off;
    for _ in 0..count {
        assert_eq!(u32_at(p), 0x0201_4b50);
        let (method, time, date, crc) = (u16_at(p + 10), u16_at(p + 12), u16_at(p + 14), u32_at(p + 16));
        let (size, usize_, nlen, off) = (u32_at(p + 20), u32_at(p + 24), u16_at(p + 28) as usize, u32_at(p + 42) as usize);
        assert_eq!((method, time, date, size), (0, 0, 0x21, usize_));
        let name = String::from_utf8(z[p + 46..p + 46 + nlen].to_vec()).unwrap();
        assert_eq!(u32_at(off), 0x0403_4b50);
        assert_eq!(z[off + 4..off + 30], z[p + 6..p + 32], "local and central headers differ");
        let data = z[off + 30 + nlen..off + 30 + nlen + size as usize].to_vec();
        assert_eq!(crc32fast::hash(&data), crc, "{name}");
        out.push((name, data));
        p += 46 + nlen;
    }
    assert_eq!(p, end);
    out
}

#[test]
fn zip_store_only_round_trips() {
    let mut rng = Rng(9);
    let (a, b) = (rng.bytes(1000), rng.bytes(70_001));
    let entries: Vec<(&str, &[u8])> = vec![("panel-1.png", &a), ("panels/ünïcode 北.png", &b), ("empty.txt", b"")];
    let z = zip(&entries).unwrap();
    assert_eq!(z, zip(&entries).unwrap(), "reproducible bytes");
    let back = read_zip(&z);
    assert_eq!(back.len(), 3);
    for ((n, d), (bn, bd)) in entries.iter().zip(&back) {
        assert_eq!((*n, *d), (bn.as_str(), bd.as_slice()));
    }
    assert_eq!(read_zip(&zip(&[]).unwrap()).len(), 0);

    let Ok(python) = std::process::Command::new("python3").arg("--version").output() else {
        eprintln!("python3 not found: zipfile check skipped");
        return;
    };
    assert!(python.status.success());
    let path = std::env::temp_dir().join(format!("iclora-recipe-test-{}.zip", std::process::id()));
    std::fs::write(&path, &z).unwrap();
    let script = "import sys,zipfile,zlib\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nfor i in z.infolist(): print(i.filename, i.file_size, i.compress_type, i.date_time, '%08x' % zlib.crc32(z.read(i)))";
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: String = entries
        .iter()
        .map(|(n, d)| format!("{n} {} 0 (1980, 1, 1, 0, 0, 0) {:08x}\n", d.len(), crc32fast::hash(d)))
        .collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

#[test]
fn task_presets_match_the_model_card() {
    // DESIGN.md, "IC-LoRA specifics": file and canvas of each released adapter.
    let table = [
        ("couple-profile", 2048, 1024),
        ("film-storyboard", 1024, 1536),
        ("font-design", 1792, 1216),
        ("home-decoration", 1344, 1728),
        ("portrait-illustration", 1152, 1088),
        ("portrait-photography", 1344, 1728),
        ("ppt-templates", 1984, 1152),
        ("sandstorm-visual-effect", 1408, 1600),
        ("sparklers-visual-effect", 960, 1088),
        ("visual-identity-design", 1472, 1024),
    ];
    let tasks = task_presets().unwrap();
    assert_eq!(tasks.len(), table.len());
    for (t, (id, w, h)) in tasks.iter().zip(table) {
        assert_eq!((t.id.as_str(), t.width, t.height), (id, w, h));
        assert_eq!(t.adapter, format!("https://huggingface.co/ali-vilab/In-Context-LoRA/resolve/main/{id}.safetensors"));
        assert_eq!((t.scale, t.steps, t.guidance), (1.0, 20, 3.5));
        let n = (t.rows * t.cols) as usize;
        assert!(n >= 2 && t.width % (16 * t.cols) == 0 && t.height % (16 * t.rows) == 0, "{id}: {}×{} grid", t.rows, t.cols);
        assert_eq!((t.template.panel_tags.len(), t.template.example_panels.len()), (n, n), "{id}");
        let prompt = build_prompt(&t.template, &t.template.example_overall, &t.template.example_panels);
        if let Some(tag) = &t.template.task_tag {
            assert!(prompt.starts_with(&format!("{tag} ")), "{id}");
        }
        let mut at = 0;
        for tag in &t.template.panel_tags {
            assert_eq!(prompt.matches(tag.as_str()).count(), 1, "{id}: {tag}");
            let pos = prompt.find(tag.as_str()).unwrap();
            assert!(pos > at || at == 0, "{id}: tags out of order");
            at = pos;
        }
        let split = split_prompt(&t.template, &prompt);
        assert_eq!((split.overall.as_str(), &split.panels), (t.template.example_overall.as_str(), &t.template.example_panels), "{id}");
        let r = t.example_recipe(ModelSource::Preset("flux-dev-q8_0".into()), 1);
        r.validate().unwrap();
    }
    // The film storyboard example is the model card's prompt, character for character.
    assert_eq!(film("tiny").prompt, "[MOVIE-SHOTS] In a vibrant festival, [SCENE-1] we find <Leo>, a shy boy, standing at the edge of a bustling carnival, eyes wide with awe at the colorful rides and laughter, [SCENE-2] transitioning to him reluctantly trying a daring game, his friends cheering him on, [SCENE-3] culminating in a triumphant moment as he wins a giant stuffed bear, his face beaming with pride as he holds it up for all to see.");
}

#[test]
fn prompt_split_is_best_effort() {
    let t = &task_preset("font-design").unwrap().template;
    let p = build_prompt(t, "  Overall  ", &["a", "", "c"]);
    assert_eq!(p, "Overall; [TOP-LEFT] a; [TOP-RIGHT]; [BOTTOM-LEFT] c; [BOTTOM-RIGHT]");
    let s = split_prompt(t, &p);
    assert_eq!((s.overall.as_str(), s.panels.clone()), ("Overall", vec!["a".to_string(), "".into(), "c".into(), "".into()]));
    // A hand-edited prompt that lost a tag: the text stays with the tag before it.
    let s = split_prompt(t, "X [TOP-LEFT] one [BOTTOM-LEFT] three; [BOTTOM-RIGHT] four");
    assert_eq!(s.panels, vec!["one", "", "three", "four"]);
    let s = split_prompt(t, "no tags at all");
    assert_eq!((s.overall.as_str(), s.panels.len()), ("no tags at all", 4));
}

#[test]
fn model_presets_are_well_formed() {
    let models = model_presets().unwrap();
    let ids: std::collections::BTreeSet<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), models.len(), "unique ids");
    for id in ["flux-dev-q4_0", "flux-dev-q8_0", "flux-dev-fp8", "flux-schnell-q4_0", "flux-schnell-q8_0", "tiny"] {
        assert!(ids.contains(id), "{id}");
    }
    for m in models {
        assert!(["dev", "schnell"].contains(&m.variant.as_str()), "{}", m.id);
        if m.id == "tiny" {
            assert_eq!(m.urls(), vec!["tiny-flux/"]);
            continue;
        }
        assert!(m.root.is_none());
        let u = m.model_urls();
        let parts = [&u.transformer, &u.t5, &u.clip, &u.vae, &u.t5_tokenizer, &u.clip_tokenizer];
        assert!(parts.iter().all(|p| p.is_some()), "{}: every component", m.id);
        for url in m.urls() {
            check_url(&m.id, &url).unwrap();
            assert!(url.starts_with("https://huggingface.co/") && url.contains("/resolve/main/"), "{url}");
        }
        for f in [&m.transformer, &m.t5, &m.clip, &m.vae, &m.t5_tokenizer, &m.clip_tokenizer].into_iter().flatten() {
            assert!(f.bytes.is_none_or(|b| b > 0), "{}", f.url);
            assert!(f.approx.as_deref().is_none_or(|a| a.ends_with(" GB") || a.ends_with(" MB")), "{}", f.url);
        }
    }
}

#[test]
fn preview_unpacks_like_the_reference() {
    let mut rng = Rng(21);
    for (h, w) in [(2, 2), (4, 6), (8, 2), (6, 10)] {
        let latent: Vec<f32> = (0..16 * h * w).map(|_| 4.0 * rng.f32()).collect();
        let img = latent_preview(&pack(&latent, 16, h, w), h, w).unwrap();
        assert_eq!((img.width, img.height, img.pixels.len()), (w, h, h * w * 3));
        for y in 0..h {
            for x in 0..w {
                for k in 0..3 {
                    let mut v = FLUX_LATENT_RGB_BIAS[k] as f64;
                    for ch in 0..16 {
                        v += latent[(ch * h + y) * w + x] as f64 * FLUX_LATENT_RGB_FACTORS[ch][k] as f64;
                    }
                    let want = (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as i32;
                    let got = img.pixels[(y * w + x) * 3 + k] as i32;
                    // f32 vs f64 sums may straddle an integer: off by one at most.
                    assert!((got - want).abs() <= 1, "({h}×{w}) pixel ({y},{x}) channel {k}: got {got}, want {want}");
                }
            }
        }
    }
}

#[test]
fn preview_of_constant_channels_is_one_color() {
    // Channel 12 (a grey-ish direction) at 5.0, channel 2 at -3.0, the rest 0.
    let (h, w) = (4, 8);
    let mut latent = vec![0f32; 16 * h * w];
    latent[12 * h * w..13 * h * w].fill(5.0);
    latent[2 * h * w..3 * h * w].fill(-3.0);
    let img = latent_preview(&pack(&latent, 16, h, w), h, w).unwrap();
    let color: Vec<u8> = (0..3)
        .map(|k| {
            let v = FLUX_LATENT_RGB_BIAS[k] + 5.0 * FLUX_LATENT_RGB_FACTORS[12][k] - 3.0 * FLUX_LATENT_RGB_FACTORS[2][k];
            (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8
        })
        .collect();
    // By hand: bias + 5·(0.0817, 0.0765, 0.0749) − 3·(0.0275, −0.0668, −0.0433) = (0.2931, 0.5111, 0.4193).
    assert_eq!(color, vec![164, 192, 180]);
    for px in img.pixels.chunks(3) {
        assert_eq!(px, &color[..]);
    }
    assert!(matches!(latent_preview(&[0.0; 64], 2, 4), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(latent_preview(&[0.0; 64], 3, 2), Err(Error::InvalidArgument(_))));
    assert!(matches!(latent_preview(&[], 0, 0), Err(Error::InvalidArgument(_))));
}
