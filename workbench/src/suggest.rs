//! "Did you mean ...?": the known name closest to a misspelt one.

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|&(distance, c)| distance <= 2.max(c.len() / 3))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_its_word_and_a_stranger_finds_none() {
        let known = ["temperature", "integration", "margin"];
        assert_eq!(closest("temprature", known.into_iter()), Some("temperature"));
        assert_eq!(closest("margni", known.into_iter()), Some("margin"));
        assert_eq!(closest("learning_rate", known.into_iter()), None);
    }
}
