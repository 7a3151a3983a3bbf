//! The heaviest hitters among names, in bounded memory: the Space-Saving
//! algorithm (Metwally et al., 2005). It keeps `CAPACITY` counters; a new
//! name takes over the smallest one and inherits its count, so a name's
//! count may be overestimated by at most the smallest count, and any name
//! seen more often than 1/`CAPACITY` of the time is sure to be kept.
//!
//! Names come from requests (the consumer an authentication plugin
//! identified), so neither their number nor their length may grow memory:
//! both are capped.

/// Counters kept per sketch.
pub(super) const CAPACITY: usize = 16;
/// Longest name kept, in bytes; longer ones are cut at a character
/// boundary.
pub(super) const MAX_NAME: usize = 128;

#[derive(Clone, Debug, Default)]
pub(super) struct TopK {
    items: Vec<(Box<str>, u64)>,
}

/// `name` cut to at most [`MAX_NAME`] bytes.
pub(super) fn cut(name: &str) -> &str {
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut end = MAX_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl TopK {
    pub fn add(&mut self, name: &str) {
        let name = cut(name);
        if let Some(item) = self.items.iter_mut().find(|(n, _)| **n == *name) {
            item.1 += 1;
            return;
        }
        if self.items.len() < CAPACITY {
            self.items.push((name.into(), 1));
            return;
        }
        // Full: the smallest counter goes to the newcomer.
        if let Some(min) = self.items.iter_mut().min_by_key(|(_, c)| *c) {
            *min = (name.into(), min.1 + 1);
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    pub fn items(&self) -> impl Iterator<Item = (&str, u64)> {
        self.items.iter().map(|(n, c)| (&**n, *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_survive_a_flood_of_singletons() {
        let mut t = TopK::default();
        for i in 0..10_000 {
            t.add(&format!("client-{i}"));
            if i % 5 == 0 {
                t.add("alice");
            }
            if i % 10 == 0 {
                t.add("bob");
            }
        }
        let items: Vec<_> = t.items().collect();
        assert_eq!(items.len(), CAPACITY);
        let count = |name| items.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
        assert!(count("alice").unwrap() >= 2000);
        assert!(count("bob").unwrap() >= 1000);
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let mut t = TopK::default();
        t.add(&long);
        t.add(&long);
        let (name, count) = t.items().next().unwrap();
        assert!(name.len() <= MAX_NAME);
        assert!(long.starts_with(name));
        assert_eq!(count, 2);
    }
}
