//! The student's label space: the union of the teachers' label sets, matched by name.

use std::collections::BTreeMap;

/// The union of the teachers' labels, with each teacher's labels mapped to union indices by
/// name (never by position): label sets may be disjoint, overlapping or of different sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSpace {
    pub labels: Vec<String>,
    /// For each teacher, in the given order, the union index of each of its labels.
    pub maps: Vec<Vec<u32>>,
}

impl LabelSpace {
    /// Labels in order of first appearance, teacher by teacher.
    pub fn union<'a>(teacher_labels: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut labels: Vec<String> = Vec::new();
        let mut index: BTreeMap<String, u32> = BTreeMap::new();
        let maps = teacher_labels
            .into_iter()
            .map(|own| {
                own.iter()
                    .map(|label| {
                        *index.entry(label.clone()).or_insert_with(|| {
                            labels.push(label.clone());
                            labels.len() as u32 - 1
                        })
                    })
                    .collect()
            })
            .collect();
        Self { labels, maps }
    }

    pub fn index_of(&self, label: &str) -> Option<u32> {
        self.labels.iter().position(|l| l == label).map(|i| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_maps_overlapping_labels_by_name() {
        let a = vec!["sport".to_string(), "tech".to_string()];
        let b = vec!["politics".to_string(), "sport".to_string()];
        let space = LabelSpace::union([a.as_slice(), b.as_slice()]);
        assert_eq!(space.labels, ["sport", "tech", "politics"]);
        assert_eq!(space.maps, vec![vec![0, 1], vec![2, 0]]);
        assert_eq!(space.index_of("politics"), Some(2));
    }
}
