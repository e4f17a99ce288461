//! Which namespaces' Pods the operator watches: the listed ones (or all), minus those matching an
//! exclusion glob (`kube-*`). Built once from the flags; asked on every Pod event.

use std::collections::HashSet;

use super::OperatorError;

pub struct NamespaceFilter {
    include: HashSet<String>,
    exclude: globset::GlobSet,
}

impl NamespaceFilter {
    /// `include` empty watches every namespace; an exclusion wins over an inclusion. An invalid
    /// glob is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, OperatorError> {
        let mut globs = globset::GlobSetBuilder::new();
        for g in exclude {
            globs.add(
                globset::Glob::new(g)
                    .map_err(|e| OperatorError::Setup(format!("--exclude-namespaces {g}: {e}")))?,
            );
        }
        Ok(Self {
            include: include.iter().cloned().collect(),
            exclude: globs
                .build()
                .map_err(|e| OperatorError::Setup(format!("--exclude-namespaces: {e}")))?,
        })
    }

    pub fn watches(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.contains(namespace))
            && !self.exclude.is_match(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn filter(include: &[&str], exclude: &[&str]) -> NamespaceFilter {
        NamespaceFilter::new(&strings(include), &strings(exclude)).expect("valid globs")
    }

    #[test]
    fn namespaces_are_filtered_by_list_and_exclusion_globs() {
        let f = filter(&[], &["kube-*", "istio-system"]);
        assert!(f.watches("shop"));
        assert!(!f.watches("kube-system"));
        assert!(!f.watches("istio-system"));
        let f = filter(&["shop", "kube-public"], &["kube-*"]);
        assert!(f.watches("shop"));
        assert!(!f.watches("billing"));
        assert!(!f.watches("kube-public"), "exclusion wins");
        assert!(filter(&[], &[]).watches("anything"));
    }

    #[test]
    fn an_invalid_exclusion_glob_is_an_error_naming_it() {
        let err = NamespaceFilter::new(&[], &strings(&["team-[a"]))
            .err()
            .expect("invalid glob");
        assert!(
            err.to_string().contains("--exclude-namespaces team-[a"),
            "{err}"
        );
    }
}
