//! Recipes: validation, share links, PNG metadata, ZIP archives, download hosts (presets and
//! latent previews: tests/presets.rs).
//! Pure CPU; the ZIP test also unzips with Python's `zipfile` when `python3` is on PATH.

use iclora::error::Error;
use iclora::pipeline::step_cache::StepCache;
use iclora::recipe::png::{encode_png, recipe_from_png, KEYWORD};
use iclora::recipe::presets::{task_preset, task_presets};
use iclora::recipe::share::{base64url_decode, base64url_encode, from_fragment, to_fragment};
use iclora::recipe::zip::zip;
use iclora::recipe::{check_url, parse_web_url, url_host, Adapter, ModelSource, ModelUrls, Recipe, RECIPE_VERSION};

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
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
    r.adapters.push(Adapter { url: "http://lora.example.net/ü.safetensors".into(), scale: -0.35 });
    r.captions.overall = "Ein Fest 🎆 — «天空» \"quoted\" \\ back".into();
    r.captions.panels[1] = "<Léa> 😀 in 北京, tab\there".into();
    r.prompt = "edited by hand: 🎆 «天空» <Léa>\nnew line".into();
    r.seed = u64::MAX;
    r.guidance = 0.1;
    r.references_used = true;
    r.step_cache = Some(StepCache { threshold: 0.12, max_reuse: Some(3) });
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
        (
            "captions.panels",
            Box::new(|r| {
                r.captions.panels.pop();
            }),
        ),
        ("model", Box::new(|r| r.model = ModelSource::Preset("no-such-model".into()))),
        ("model", Box::new(|r| r.model = ModelSource::Custom(ModelUrls::default()))),
        (
            "model.vae",
            Box::new(|r| {
                r.model = ModelSource::Custom(ModelUrls {
                    root: Some("https://a.org/m".into()),
                    vae: Some("file:///etc/passwd".into()),
                    ..Default::default()
                })
            }),
        ),
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

/// The step cache travels in recipes, PNGs' JSON and links; recipes and links written before it
/// existed (no such field) still open, with the cache off, and a recipe with the cache off is
/// written exactly as before (so older apps open it too).
#[test]
fn step_cache_setting_travels_and_its_absence_means_off() {
    assert_eq!(RECIPE_VERSION, 1, "the step cache needs no new format version");
    // JSON as builds before the step cache wrote it.
    let old = r#"{"version":1,"model":{"preset":"tiny"},"adapters":[],"task":null,"captions":{"overall":"","panels":[]},"prompt":"a cat","layout":{"rows":1,"cols":1},"width":64,"height":64,"steps":4,"guidance":3.5,"seed":1,"sampler":"euler","references_used":false}"#;
    let mut r = Recipe::from_json(old).unwrap();
    assert_eq!(r.step_cache, None);
    assert_eq!(r.to_json().unwrap(), old, "with the cache off a recipe is written as before");
    // A link as builds before the step cache wrote it: the 16-element array.
    let old_wire = r#"[1,"tiny",[],null,"",[],"a cat",1,1,64,64,4,3.5,1,"euler",0]"#;
    let enc =
        |json: &str| format!("#r={}", base64url_encode(&miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 9)));
    assert_eq!(from_fragment(&enc(old_wire)).unwrap(), r);
    assert_eq!(to_fragment(&r).unwrap(), enc(old_wire), "with the cache off a link is written as before");
    // On: JSON and link carry it, with and without a cap.
    for c in [StepCache { threshold: 0.08, max_reuse: None }, StepCache { threshold: 0.25, max_reuse: Some(2) }] {
        r.step_cache = Some(c);
        assert_eq!(Recipe::from_json(&r.to_json().unwrap()).unwrap(), r);
        assert_eq!(from_fragment(&to_fragment(&r).unwrap()).unwrap(), r);
    }
    // Checked like every field.
    for bad in [
        StepCache { threshold: -0.5, max_reuse: None },
        StepCache { threshold: f32::INFINITY, max_reuse: None },
        StepCache { threshold: 0.1, max_reuse: Some(0) },
    ] {
        r.step_cache = Some(bad);
        assert_eq!(field_of(r.validate().unwrap_err()), "step_cache", "{bad:?}");
    }
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
    let enc =
        |json: &str| format!("#r={}", base64url_encode(&miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 9)));
    assert!(matches!(from_fragment(&enc("{\"a\":1}")), Err(Error::BadShareLink(_))));
    assert!(matches!(from_fragment(&enc("[1,\"tiny\"]")), Err(Error::BadShareLink(_))));
    assert!(matches!(from_fragment(&enc("[2,\"future\"]")), Err(Error::RecipeVersion { found: 2, supported: 1 })));
}

#[test]
fn base64url_matches_rfc4648() {
    // RFC 4648 §10 vectors, without padding.
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
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
    assert_eq!(url_host("https://h.io:1/x").as_deref(), Some("h.io:1"));
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
        let (size, usize_, nlen, off) =
            (u32_at(p + 20), u32_at(p + 24), u16_at(p + 28) as usize, u32_at(p + 42) as usize);
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

/// Few-step presets (`web/presets/fast.json`): the model cards' settings, stacked on any task's
/// adapter as one more adapter that links and the host list carry.
/// Hosts are read as the browser reads them (WHATWG), and any URL where a reader and the browser
/// could see different hosts is refused.
#[test]
fn urls_that_could_hide_their_host_are_refused() {
    let refused = [
        // The browser reads `\` as `/`: fetched from evil.example, shown as huggingface.co before.
        "https://evil.example\\@huggingface.co/x.safetensors",
        "https://evil.example\\huggingface.co/x",
        "https://huggingface.co\\x.safetensors",
        // User names and passwords hide the host after `@`.
        "https://huggingface.co@evil.example/x",
        "https://u:p@h.io:1/x",
        "https://@h.io/x",
        "https://huggingface.co%40evil.example/x",
        // Hosts the parser rewrites: numeric shorthands, percent-encoding, IPv6 not in shortest form.
        "http://127.1/x",
        "http://2130706433/x",
        "http://0x7f.0.0.1/x",
        "https://%65vil.example/x",
        "http://[0:0::1]/x",
    ];
    for bad in refused {
        let e = parse_web_url("adapters[0].url", bad).expect_err(bad);
        assert!(matches!(&e, iclora::Error::InvalidRecipe { field, .. } if field == "adapters[0].url"), "{bad}: {e}");
        assert_eq!(url_host(bad), None, "{bad}");
        assert!(check_url("u", bad).is_err(), "{bad}");
    }
    let e = parse_web_url("u", refused[0]).unwrap_err().to_string();
    assert!(e.contains("backslash"), "{e}");
    let e = parse_web_url("u", refused[3]).unwrap_err().to_string();
    assert!(e.contains("evil.example") && e.contains('@'), "the message names the real host: {e}");

    // Accepted: mixed case (hosts are case-insensitive), ports (the default one dropped), IPv6.
    let ok = |u: &str| parse_web_url("u", u).unwrap_or_else(|e| panic!("{u}: {e}"));
    assert_eq!(ok("HTTPS://HuggingFace.CO/a/b?c#d").host, "huggingface.co");
    assert_eq!(ok("https://h.example:443/x").host, "h.example");
    assert_eq!(ok("http://h.example:80/x").host, "h.example");
    assert_eq!(ok("https://h.example:8443/x").host, "h.example:8443");
    assert_eq!(ok("http://[::1]:8080/x").host, "[::1]:8080");
    assert_eq!(ok("http://127.0.0.1:9/x").host, "127.0.0.1:9");
    // What is fetched is the parser's serialization.
    assert_eq!(ok("HTTPS://H.example:443/a b".replace(' ', "%20").as_str()).href, "https://h.example/a%20b");

    // An internationalized host: contacted (and shown first) as punycode, the Unicode form beside.
    // "һ" is CYRILLIC SMALL LETTER SHHA, a look-alike of Latin "h".
    let idn = ok("https://һuggingface.co/x.safetensors");
    assert_eq!(idn.host, "xn--uggingface-nzj.co");
    assert_eq!(idn.host_unicode.as_deref(), Some("һuggingface.co"));
    assert_eq!(idn.host_label(), "xn--uggingface-nzj.co (һuggingface.co)");
    assert_ne!(idn.host, "huggingface.co");
    // Typed in punycode already: nothing to show beside it.
    assert_eq!(ok("https://xn--uggingface-nzj.co/x").host_unicode, None);
    // A recipe's host list shows the label.
    let mut r = rich();
    r.adapters[0].url = "https://һuggingface.co/x.safetensors".into();
    assert!(r.hosts().contains(&"xn--uggingface-nzj.co (һuggingface.co)".to_string()), "{:?}", r.hosts());
}

/// `recipe::run`: the locations a run reads, resolved as the studio's worker and
/// `iclora generate --recipe` both do, and the pipeline's options taken from the recipe.
#[test]
fn a_recipe_becomes_a_run_with_its_locations_resolved() {
    // The bundled demo's preset is relative to the page.
    let mut r = film("tiny");
    r.adapters = vec![
        Adapter { url: "loras/a.safetensors".into(), scale: 0.5 },
        Adapter { url: "https://h.example/b.safetensors".into(), scale: 1.0 },
    ];
    let m = r.model_locations(Some("http://127.0.0.1:8080/app/index.html?x=1")).unwrap();
    assert_eq!(m.root.as_deref(), Some("http://127.0.0.1:8080/app/tiny-flux"));
    assert_eq!(m.transformer, None);
    let loras = r.lora_locations(Some("http://127.0.0.1:8080/app/")).unwrap();
    assert_eq!(
        loras,
        [
            ("http://127.0.0.1:8080/app/loras/a.safetensors".to_string(), 0.5),
            ("https://h.example/b.safetensors".to_string(), 1.0)
        ]
    );
    // Without a page address a relative location says what to give.
    let e = r.model_locations(None).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidRecipe { field, why } if field == "model.root" && why.contains("relative") && why.contains("--base")),
        "{e}"
    );
    // Absolute locations need no base; a host hidden behind a backslash is refused before joining.
    r.model =
        ModelSource::Custom(ModelUrls { root: Some("https://models.example/flux/".into()), ..Default::default() });
    assert_eq!(r.model_locations(None).unwrap().root.as_deref(), Some("https://models.example/flux"));
    r.adapters = vec![Adapter { url: "https://evil.example\\@h.example/x.safetensors".into(), scale: 1.0 }];
    assert!(matches!(r.lora_locations(Some("https://h.example/")), Err(Error::InvalidRecipe { .. })));
    // A model with neither a root nor the four components is refused.
    r.model =
        ModelSource::Custom(ModelUrls { transformer: Some("https://m.example/t.gguf".into()), ..Default::default() });
    assert!(matches!(r.model_locations(None), Err(Error::InvalidRecipe { field, .. }) if field == "model"));
    // The pipeline's options mirror the recipe.
    let mut r = film("tiny");
    r.step_cache = Some(StepCache { threshold: 0.2, max_reuse: Some(3) });
    let o = r.generate_options(vec![("https://h.example/b.safetensors".into(), 0.7)]);
    assert_eq!(
        (o.prompt.as_str(), o.width, o.height, o.steps, o.guidance, o.seed),
        (r.prompt.as_str(), r.width as usize, r.height as usize, r.steps as usize, r.guidance, r.seed)
    );
    let l = o.layout.unwrap();
    assert_eq!((l.rows, l.cols), (r.layout.rows as usize, r.layout.cols as usize));
    assert_eq!(o.step_cache, r.step_cache);
    assert_eq!(o.loras.len(), 1);
    assert!(o.references.is_empty() && !o.f16 && !o.merge_loras && o.max_sequence_length.is_none());
}
