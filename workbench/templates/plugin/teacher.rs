//! `{{name}}`: a teacher plugin. Its logit for a label is how often the label's name occurs in
//! the text, a stand-in for a model: replace `forward` with yours (load it in `create_teacher`
//! from a path parameter; `workbench_plugin_api::directory_or_asset` also takes a pinned
//! asset's name, such as `minilm`).

use workbench_plugin_api::{
    export_plugin, params, ComponentKind, ComponentSpec, ForwardRequest, ParamKind, ParamTable, Params, Plugin,
    PluginError, PluginManifest, PluginResult, RString, Sampling, Signals, Teacher, TeacherInfo, TeacherOutput, Tensor,
};

pub struct {{Type}}Plugin;

impl Plugin for {{Type}}Plugin {
    fn manifest() -> PluginManifest {
        workbench_plugin_api::manifest![ComponentSpec::new(
            "{{name}}",
            ComponentKind::Teacher,
            "Logit of a label = occurrences of its name in the text.",
            {{Type}}::specs(),
            Signals::default(),
        )]
    }

    fn create_teacher(component: &str, params: &ParamTable) -> PluginResult<Box<dyn Teacher>> {
        match component {
            "{{name}}" => Ok(Box::new({{Type}}::parse(params)?)),
            other => Err(PluginError::unsupported(format!("no teacher named `{other}`"))),
        }
    }
}

export_plugin!({{Type}}Plugin);

params! {
    /// The teacher is its parameters, declared once: schema and parsing both come from here.
    pub struct {{Type}} {
        /// The label names, in logit order.
        labels: Vec<String> = required(ParamKind::TextList),
    }
}

impl Teacher for {{Type}} {
    fn info(&self) -> PluginResult<TeacherInfo> {
        Ok(TeacherInfo {
            labels: self.labels.iter().map(|l| l.as_str().into()).collect(),
            hidden_size: 0,
            members: 1,
        })
    }

    /// `[1, B, L]` logits of one deterministic pass.
    fn forward(&mut self, texts: &[RString], request: &ForwardRequest) -> PluginResult<TeacherOutput> {
        if request.sampling != Sampling::Deterministic {
            return Err(PluginError::unsupported("this teacher has no dropout or members: deterministic passes only"));
        }
        let logits: Vec<f32> = texts
            .iter()
            .flat_map(|text| {
                let text = text.to_lowercase();
                self.labels.iter().map(move |label| text.matches(&label.to_lowercase()).count() as f32)
            })
            .collect();
        Ok(TeacherOutput::new(Tensor::new(vec![1, texts.len(), self.labels.len()], logits)?, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_labels_name_in_each_text() {
        let mut teacher = {{Type}} { labels: vec!["sport".into(), "science".into()] };
        let texts = [RString::from("Sport and more sport"), RString::from("science")];
        let request = ForwardRequest { sampling: Sampling::Deterministic, want_hidden: false };
        let output = teacher.forward(&texts, &request).unwrap();
        assert_eq!(output.logits.shape(), &[1, 2, 2]);
        assert_eq!(output.logits.data(), &[2.0, 0.0, 0.0, 1.0]);
    }
}
