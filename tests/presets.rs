//! Presets (models, IC-LoRA tasks, few-step LoRAs: web/presets/) and the linear latent preview.
//! Pure CPU.

use iclora::error::Error;
use iclora::pipeline::preview::{latent_preview, FLUX_LATENT_RGB_BIAS, FLUX_LATENT_RGB_FACTORS};
use iclora::recipe::fast::{fast_preset, fast_preset_of, fast_presets};
use iclora::recipe::presets::{build_prompt, model_presets, split_prompt, task_preset, task_presets};
use iclora::recipe::share::{from_fragment, to_fragment};
use iclora::recipe::{check_url, Adapter, ModelSource, Recipe};
use iclora::reference::pack::pack;
use iclora::reference::random::Rng;

fn film(model: &str) -> Recipe {
    task_preset("film-storyboard").unwrap().example_recipe(ModelSource::Preset(model.into()), 42)
}

#[test]
fn fast_presets_stack_a_few_step_lora_on_the_task() {
    let presets = fast_presets().unwrap();
    let card = [
        ("turbo-alpha-8", "https://huggingface.co/alimama-creative/FLUX.1-Turbo-Alpha/resolve/main/diffusion_pytorch_model.safetensors", 1.0, 8, 3.5),
        ("hyper-flux-8", "https://huggingface.co/ByteDance/Hyper-SD/resolve/main/Hyper-FLUX.1-dev-8steps-lora.safetensors", 0.125, 8, 3.5),
    ];
    assert_eq!(presets.len(), card.len());
    for (p, (id, url, scale, steps, guidance)) in presets.iter().zip(card) {
        assert_eq!(
            (p.id.as_str(), p.adapter.as_str(), p.scale, p.steps, p.guidance),
            (id, url, scale, steps, guidance)
        );
        assert!(p.title.starts_with("Fast: 8 steps"), "{}", p.title);
        check_url("adapter", &p.adapter).unwrap();
    }
    for t in task_presets().unwrap() {
        let mut r = t.example_recipe(ModelSource::Preset("flux-dev-q4_0".into()), 3);
        let p = fast_preset("turbo-alpha-8").unwrap();
        p.apply(&mut r);
        assert_eq!(
            r.adapters,
            vec![
                Adapter { url: t.adapter.clone(), scale: t.scale },
                Adapter { url: p.adapter.clone(), scale: p.scale }
            ],
            "{}",
            t.id
        );
        assert_eq!((r.steps, r.guidance), (8, 3.5));
        r.validate().unwrap();
        assert_eq!(fast_preset_of(&r).map(|p| p.id.as_str()), Some("turbo-alpha-8"));
        // Applying again, or another few-step preset, keeps one few-step adapter after the task's.
        p.apply(&mut r);
        let hyper = fast_preset("hyper-flux-8").unwrap();
        hyper.apply(&mut r);
        assert_eq!(
            r.adapters,
            vec![
                Adapter { url: t.adapter.clone(), scale: t.scale },
                Adapter { url: hyper.adapter.clone(), scale: 0.125 }
            ],
            "{}",
            t.id
        );
        assert_eq!(from_fragment(&to_fragment(&r).unwrap()).unwrap(), r, "{}: the link carries it", t.id);
        assert!(r.urls().contains(&hyper.adapter) && r.hosts().contains(&"huggingface.co".to_string()));
    }
    assert!(fast_preset("nope").is_none());
    assert!(fast_preset_of(&film("tiny")).is_none());
}

#[test]
fn task_presets_match_the_model_card() {
    // File and canvas (width × height) of each released adapter, as the model card of
    // ali-vilab/In-Context-LoRA on Hugging Face recommends them.
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
        assert_eq!(
            t.adapter,
            format!("https://huggingface.co/ali-vilab/In-Context-LoRA/resolve/main/{id}.safetensors")
        );
        assert_eq!((t.scale, t.steps, t.guidance), (1.0, 20, 3.5));
        let n = (t.rows * t.cols) as usize;
        assert!(
            n >= 2 && t.width % (16 * t.cols) == 0 && t.height % (16 * t.rows) == 0,
            "{id}: {}×{} grid",
            t.rows,
            t.cols
        );
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
        assert_eq!(
            (split.overall.as_str(), &split.panels),
            (t.template.example_overall.as_str(), &t.template.example_panels),
            "{id}"
        );
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
    assert_eq!(
        (s.overall.as_str(), s.panels.clone()),
        ("Overall", vec!["a".to_string(), "".into(), "c".into(), "".into()])
    );
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
    let mut rng = Rng::new(21);
    for (h, w) in [(2, 2), (4, 6), (8, 2), (6, 10)] {
        let latent: Vec<f32> = rng.vec(16 * h * w, -4.0, 4.0);
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
            let v =
                FLUX_LATENT_RGB_BIAS[k] + 5.0 * FLUX_LATENT_RGB_FACTORS[12][k] - 3.0 * FLUX_LATENT_RGB_FACTORS[2][k];
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
