//! The CI system bkd runs under, recognised from the variables each one
//! sets in every job. Kept apart from what bkd does with it (the progress
//! view, the pipeline outputs) so each asks the same question.

/// A CI system bkd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiSystem {
    /// `BUILDKITE=true`
    Buildkite,
    /// `GITHUB_ACTIONS=true`
    GitHubActions,
    /// `GITLAB_CI=true`
    GitLab,
}

impl CiSystem {
    /// The CI system of this process's environment.
    pub fn detect() -> Option<CiSystem> {
        Self::detect_in(|name| std::env::var(name).ok())
    }

    /// The CI system the variables read by `var` describe. Buildkite comes
    /// first: its agent may run a job that itself sets the others.
    pub fn detect_in(var: impl Fn(&str) -> Option<String>) -> Option<CiSystem> {
        let set = |name: &str| var(name).is_some_and(|v| v == "true");
        if set("BUILDKITE") {
            Some(CiSystem::Buildkite)
        } else if set("GITHUB_ACTIONS") {
            Some(CiSystem::GitHubActions)
        } else if set("GITLAB_CI") {
            Some(CiSystem::GitLab)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CiSystem::Buildkite => "Buildkite",
            CiSystem::GitHubActions => "GitHub Actions",
            CiSystem::GitLab => "GitLab CI",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(vars: &[(&str, &str)]) -> Option<CiSystem> {
        CiSystem::detect_in(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn each_system_by_its_variable() {
        assert_eq!(detect(&[]), None);
        assert_eq!(detect(&[("BUILDKITE", "true")]), Some(CiSystem::Buildkite));
        assert_eq!(
            detect(&[("GITHUB_ACTIONS", "true")]),
            Some(CiSystem::GitHubActions)
        );
        assert_eq!(detect(&[("GITLAB_CI", "true")]), Some(CiSystem::GitLab));
        assert_eq!(
            detect(&[("GITLAB_CI", "true"), ("BUILDKITE", "true")]),
            Some(CiSystem::Buildkite)
        );
        // Only the exact value the systems set counts.
        assert_eq!(detect(&[("BUILDKITE", "1")]), None);
        assert_eq!(detect(&[("CI", "true")]), None);
    }
}
