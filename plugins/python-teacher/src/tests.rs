use super::*;

/// The built-in worker's protocol without torch (tests/fake_worker.py); `model` picks its mode.
fn fake(model: &str, timeout: usize) -> PluginResult<PythonTeacher> {
    PythonTeacher::start(TransformersParams { timeout, ..fake_params(model) })
}

fn texts(texts: &[&str]) -> Vec<RString> {
    texts.iter().map(|t| RString::from(*t)).collect()
}

fn request(sampling: Sampling, want_hidden: bool) -> ForwardRequest {
    ForwardRequest { sampling, want_hidden }
}

fn message<T>(result: PluginResult<T>) -> String {
    result.err().expect("an error").message.to_string()
}

#[test]
fn the_worker_answers_deterministic_and_seeded_passes_with_hidden_states() {
    let mut teacher = fake("fake", 30).unwrap();
    let info = teacher.info().unwrap();
    assert_eq!(info.labels.iter().map(|l| l.as_str()).collect::<Vec<_>>(), ["neg", "pos"]);
    assert_eq!((info.hidden_size, info.members), (3, 1));
    let asked = texts(&["abcd", "a b"]);
    let out = teacher.forward(&asked, &request(Sampling::Deterministic, true)).unwrap();
    assert_eq!(out.logits.shape(), [1, 2, 2]);
    let close =
        |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6) && got.len() == want.len();
    assert!(close(out.logits.data(), &[0.4, -0.4, 0.3, -0.3]), "{:?}", out.logits.data());
    assert_eq!(out.hidden().unwrap().data(), [4.0, 1.0, 1.0, 3.0, 2.0, 1.0]);
    let stochastic = Sampling::Stochastic { passes: 2, seed: 5, top_layers: 0, lower_passes: 0 };
    let out = teacher.forward(&asked, &request(stochastic, false)).unwrap();
    assert_eq!(out.logits.shape(), [2, 2, 2]);
    assert!(
        close(out.logits.data(), &[0.405, -0.395, 0.305, -0.295, 0.415, -0.385, 0.315, -0.285]),
        "{:?}",
        out.logits.data()
    );
    assert!(out.hidden().is_none());
    let layers = Sampling::Stochastic { passes: 2, seed: 5, top_layers: 1, lower_passes: 0 };
    assert!(message(teacher.forward(&asked, &request(layers, false)))
        .contains("`top_layers` and `lower_passes` need our encoder"));
    assert_eq!(
        message(teacher.forward(&asked, &request(Sampling::Members, false))),
        "`fake` is one model: it has no ensemble members"
    );
}

#[test]
fn every_way_the_worker_can_fail_is_an_error_naming_the_model_and_the_call() {
    let missing = PythonTeacher::start(TransformersParams { python: "/no/such/python3".into(), ..fake_params("x") });
    assert_eq!(
        message(missing),
        "cannot start the Python interpreter `/no/such/python3` (No such file or directory (os error 2)): set the \
         teacher's `python` to one with torch and transformers (scripts/requirements-bridge.txt)"
    );
    let python = |model: &str| message(fake(model, 30));
    assert!(
        python("no-transformers").starts_with("the Python worker of `no-transformers` failed in loading the model: ")
    );
    assert!(python("no-transformers").ends_with("cannot import torch and transformers (No module named 'torch')"));
    assert_eq!(
        python("bad-load"),
        "the Python worker of `bad-load` failed in loading the model: cannot load bad-load on cpu: OSError: bad-load is \
         not a checkpoint"
    );
    let forward = |model: &str, timeout: usize| {
        let mut teacher = fake(model, timeout).unwrap();
        message(teacher.forward(&texts(&["x"]), &request(Sampling::Deterministic, false)))
    };
    assert_eq!(
        forward("crash-on-forward", 30),
        "the Python worker of `crash-on-forward` failed in forward: its Python worker exited with status 3 during forward"
    );
    assert_eq!(
        forward("garbage-on-forward", 30),
        format!(
            "the Python worker of `garbage-on-forward` failed in forward: its Python worker wrote a frame of {} bytes, \
             more than the limit of 1073741824: not a frame of this protocol during forward, and was stopped",
            u64::from_le_bytes(*b"garbage!")
        )
    );
    assert_eq!(
        forward("stall", 1),
        "the Python worker of `stall` failed in forward: its Python worker did not answer forward within 1 s and was stopped"
    );
}

fn fake_params(model: &str) -> TransformersParams {
    TransformersParams {
        model: model.into(),
        python: "python3".into(),
        device: "cpu".into(),
        max_length: 128,
        batch_size: 32,
        hidden: "mean".into(),
        trust_remote_code: false,
        timeout: 30,
        worker: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_worker.py").into(),
    }
}
