use super::*;

fn labels() -> Vec<String> {
    vec!["sport".into(), "space".into()]
}

fn data() -> SignalsData {
    SignalsData {
        texts: vec!["first text".into(), "second".into(), "third, with ünïcode".into()],
        labels: labels(),
        logits: vec![vec![1.0, -1.0], vec![0.5, 2.0], vec![-3.0, 0.25]],
        hidden: Some(vec![vec![0.1, 0.2, 0.3], vec![0.4, 0.5, 0.6], vec![0.7, 0.8, 0.9]]),
        samples: Some(vec![
            vec![vec![1.1, -1.1], vec![0.6, 2.1], vec![-3.1, 0.35]],
            vec![vec![0.9, -0.9], vec![0.4, 1.9], vec![-2.9, 0.15]],
        ]),
    }
}

fn written(data: &SignalsData) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signals.safetensors");
    data.write(&path).unwrap();
    (dir, path)
}

fn texts(names: &[&str]) -> Vec<RString> {
    names.iter().map(|t| RString::from(*t)).collect()
}

fn request(sampling: Sampling, want_hidden: bool) -> ForwardRequest {
    ForwardRequest { sampling, want_hidden }
}

fn stochastic(passes: u32, top_layers: u32) -> Sampling {
    Sampling::Stochastic { passes, seed: 7, top_layers, lower_passes: 0 }
}

#[test]
fn rows_are_found_by_text_in_any_order_with_hidden_states_and_passes() {
    let (_dir, path) = written(&data());
    let mut teacher = SignalsFile::open(&path).unwrap();
    let info = teacher.info().unwrap();
    assert_eq!(info.labels.iter().map(|l| l.as_str()).collect::<Vec<_>>(), ["sport", "space"]);
    assert_eq!((info.hidden_size, info.members), (3, 1));
    let asked = texts(&["third, with ünïcode", "first text"]);
    let out = teacher.forward(&asked, &request(Sampling::Deterministic, true)).unwrap();
    assert_eq!(out.logits.shape(), [1, 2, 2]);
    assert_eq!(out.logits.data(), [-3.0, 0.25, 1.0, -1.0]);
    assert_eq!(out.hidden().unwrap().data(), [0.7, 0.8, 0.9, 0.1, 0.2, 0.3]);
    // Two passes asked of the two held: pass-major, rows in the order asked.
    let out = teacher.forward(&asked, &request(stochastic(2, 0), false)).unwrap();
    assert_eq!(out.logits.shape(), [2, 2, 2]);
    assert_eq!(out.logits.data(), [-3.1, 0.35, 1.1, -1.1, -2.9, 0.15, 0.9, -0.9]);
    assert!(out.hidden().is_none());
    // One of two passes: the first.
    let out = teacher.forward(&texts(&["second"]), &request(stochastic(1, 0), false)).unwrap();
    assert_eq!(out.logits.data(), [0.6, 2.1]);
}

#[test]
fn what_the_file_cannot_give_is_refused_naming_the_file_and_the_remedy() {
    let (_dir, path) = written(&SignalsData { samples: None, hidden: None, ..data() });
    let mut teacher = SignalsFile::open(&path).unwrap();
    let message = |result: PluginResult<TeacherOutput>| result.err().unwrap().message.to_string();
    let shown = path.display();
    assert_eq!(
        message(teacher.forward(&texts(&["first text", "unseen", "also unseen"]), &request(Sampling::Deterministic, false))),
        format!(
            "2 of the 3 texts asked for are not in the signals file {shown} (the first: \"unseen\"); write the file for \
             the texts the run reads (`workbench texts CONFIG`, then scripts/write_signals.py)"
        )
    );
    assert_eq!(
        message(teacher.forward(&texts(&["second"]), &request(stochastic(4, 0), false))),
        format!(
            "the signals file {shown} holds no stochastic passes (tensor `samples`): write them with \
             scripts/write_signals.py --passes K"
        )
    );
    assert_eq!(
        message(teacher.forward(&texts(&["second"]), &request(Sampling::Members, false))),
        format!("the signals file {shown} holds no ensemble members (tensor `members`): write each member's logits into `members`")
    );
    // Asked for hidden states it does not have, it gives none (the host names what needs them).
    assert!(teacher.forward(&texts(&["second"]), &request(Sampling::Deterministic, true)).unwrap().hidden().is_none());
    let (_dir, path) = written(&data());
    let mut teacher = SignalsFile::open(&path).unwrap();
    assert_eq!(
        message(teacher.forward(&texts(&["second"]), &request(stochastic(16, 0), false))),
        format!(
            "the estimator asks for 16 stochastic passes, but the signals file {} holds 2; write it again with \
             --passes 16, or ask for fewer",
            path.display()
        )
    );
    assert!(message(teacher.forward(&texts(&["second"]), &request(stochastic(2, 1), false))).contains("`top_layers`"));
}

/// A tensor as written: name, dtype, shape, bytes.
type RawTensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);

/// The tensors and metadata of a bad file, and what opening it says.
type Case = (Vec<RawTensor>, Vec<(&'static str, &'static str)>, &'static str);

/// Writes a file with `tensors` and `metadata`, bypassing the checks of [`SignalsData::write`].
fn raw(tensors: &[RawTensor], metadata: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (*name, safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
    });
    let metadata = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    std::fs::write(&path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
    (dir, path)
}

#[test]
fn a_bad_file_is_refused_on_open_with_what_is_wrong() {
    let keys =
        |n: usize| ("text_sha256", Dtype::U8, vec![n, 32], (0..n).flat_map(|i| text_key(&i.to_string())).collect());
    let floats = |n: usize, value: f32| value.to_le_bytes().repeat(n);
    let labels = r#"["sport", "space"]"#;
    let good_meta = [("format", FORMAT), ("labels", labels)];
    let cases: Vec<Case> = vec![
        (vec![keys(2)], vec![("labels", labels)], "its metadata has no `format` (`workbench-signals/1` expected)"),
        (
            vec![keys(2)],
            vec![("format", "other/2"), ("labels", labels)],
            "format `other/2` is not `workbench-signals/1`",
        ),
        (
            vec![keys(2)],
            vec![("format", FORMAT)],
            "its metadata has no `labels` (a JSON list of label names in logit order)",
        ),
        (vec![keys(2)], vec![("format", FORMAT), ("labels", r#"["a", "a"]"#)], "`labels` names `a` twice"),
        (vec![keys(2)], good_meta.to_vec(), "no tensor `logits` (f32 [N, 2])"),
        (
            vec![keys(2), ("logits", Dtype::F32, vec![2, 3], floats(6, 0.0))],
            good_meta.to_vec(),
            "`logits` has shape [2, 3]; expected [2, 2] (2 texts, 2 labels)",
        ),
        (
            vec![keys(2), ("logits", Dtype::F32, vec![2, 2], floats(4, f32::NAN))],
            good_meta.to_vec(),
            "`logits` holds 4 values that are not finite numbers",
        ),
        (
            vec![
                keys(2),
                ("logits", Dtype::F32, vec![2, 2], floats(4, 0.0)),
                ("samples", Dtype::F32, vec![3, 1, 2], floats(6, 0.0)),
            ],
            good_meta.to_vec(),
            "`samples` has shape [3, 1, 2]; expected [S, 2, 2] (2 texts, 2 labels)",
        ),
        (
            vec![
                keys(2),
                ("logits", Dtype::F32, vec![2, 2], floats(4, 0.0)),
                ("extra", Dtype::F32, vec![1], floats(1, 0.0)),
            ],
            good_meta.to_vec(),
            "unknown tensor `extra` (known: text_sha256, logits, hidden, samples, members)",
        ),
        (
            vec![("text_sha256", Dtype::U8, vec![2, 32], [text_key("x"), text_key("x")].concat())],
            good_meta.to_vec(),
            "1 of its 2 texts appear more than once in `text_sha256`",
        ),
    ];
    for (tensors, metadata, expected) in cases {
        let (_dir, path) = raw(&tensors, &metadata);
        let error = SignalsFile::open(&path).err().unwrap();
        assert_eq!(error.message.to_string(), format!("signals file {}: {expected}", path.display()));
    }
    let error = SignalsFile::open(Path::new("no/such.safetensors")).err().unwrap();
    assert!(error.message.starts_with("signals file no/such.safetensors: No such file"), "{}", error.message);
}
