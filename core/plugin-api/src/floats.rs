//! Floats in the JSON frames of isolated plugin workers. JSON has no NaN or infinity (serde_json
//! writes them as `null`, which then fails to read back), so a non-finite value is written as
//! the string `"NaN"`, `"inf"` or `"-inf"`: a plugin's output reaches the host's checks the same
//! in a worker as in the host's own process.

use abi_stable::std_types::{ROption, RVec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A float as it travels.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Float {
    Number(f32),
    Named(String),
}

impl From<f32> for Float {
    fn from(value: f32) -> Self {
        match value {
            v if v.is_finite() => Float::Number(v),
            v if v.is_nan() => Float::Named("NaN".into()),
            v if v > 0.0 => Float::Named("inf".into()),
            _ => Float::Named("-inf".into()),
        }
    }
}

impl Float {
    fn value<E: serde::de::Error>(self) -> Result<f32, E> {
        match self {
            Float::Number(v) => Ok(v),
            Float::Named(name) => match name.as_str() {
                "NaN" => Ok(f32::NAN),
                "inf" => Ok(f32::INFINITY),
                "-inf" => Ok(f32::NEG_INFINITY),
                other => Err(E::custom(format!("`{other}` is not a number"))),
            },
        }
    }
}

pub mod scalar {
    use super::*;

    pub fn serialize<S: Serializer>(value: &f32, serializer: S) -> Result<S::Ok, S::Error> {
        Float::from(*value).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
        Float::deserialize(deserializer)?.value()
    }
}

pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(values: &RVec<f32>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(values.iter().map(|v| Float::from(*v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RVec<f32>, D::Error> {
        Vec::<Float>::deserialize(deserializer)?.into_iter().map(Float::value).collect()
    }
}

pub mod option_vec {
    use super::*;

    pub fn serialize<S: Serializer>(values: &ROption<RVec<f32>>, serializer: S) -> Result<S::Ok, S::Error> {
        values
            .as_ref()
            .into_option()
            .map(|v| v.iter().map(|x| Float::from(*x)).collect::<Vec<_>>())
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ROption<RVec<f32>>, D::Error> {
        let values = Option::<Vec<Float>>::deserialize(deserializer)?;
        Ok(values.map(|v| v.into_iter().map(Float::value).collect::<Result<RVec<f32>, _>>()).transpose()?.into())
    }
}

#[cfg(test)]
mod tests {
    use crate::{DistributionTerm, Tensor};

    #[test]
    fn non_finite_values_survive_a_json_round_trip() {
        let target = Tensor::new(vec![1, 4], vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.25]).unwrap();
        let term = DistributionTerm::new(vec![0, 1, 2, 3], target, f32::NAN, 2.0).weighted(vec![f32::INFINITY]);
        let json = serde_json::to_string(&term).unwrap();
        assert!(json.contains(r#"["NaN","inf","-inf",0.25]"#) && json.contains(r#""temperature":"NaN""#), "{json}");
        let back: DistributionTerm = serde_json::from_str(&json).unwrap();
        assert!(back.target.data()[0].is_nan() && back.temperature.is_nan());
        assert_eq!(back.target.data()[1..], [f32::INFINITY, f32::NEG_INFINITY, 0.25]);
        assert_eq!(back.weights(), Some(&[f32::INFINITY][..]));
        assert_eq!((back.labels, back.scale), (term.labels, 2.0));
        assert!(serde_json::from_str::<Tensor>(r#"{"shape":[1],"data":["many"]}"#).is_err());
    }
}
