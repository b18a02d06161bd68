//! A class as plain data: its name, its driver, the board's token, and one
//! entry per learner (their lab's name, their token, how their lab is).
//! Saved as `$GOBLOG_LAB_HOME/classes/CLASS/class.json`, 0600 because it
//! holds every token; written atomically like a lab's state.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::class::token::Token;
use crate::error::{Error, Result};
use crate::lab::kind::ProviderKind;
use crate::lab::state::{home, write_secret};

/// A class name leaves room for `-NNN` in its labs' names (24 at most).
pub const MAX_NAME: usize = 20;
pub const DEFAULT_NAME: &str = "class";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassState {
    pub name: String,
    pub driver: ProviderKind,
    pub created_unix: u64,
    pub board_token: Token,
    pub learners: Vec<Learner>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Learner {
    /// 1-based, as on the cards.
    pub number: u32,
    /// `learner-N`, or a name the instructor gave.
    pub name: String,
    /// The learner's lab: `CLASS-N`.
    pub lab: String,
    pub token: Token,
    pub status: LearnerStatus,
    /// Why the lab failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the learner last deployed from their console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deploy_unix: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LearnerStatus {
    Creating,
    Ready,
    Resetting,
    Failed,
}

impl LearnerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LearnerStatus::Creating => "creating",
            LearnerStatus::Ready => "ready",
            LearnerStatus::Resetting => "resetting",
            LearnerStatus::Failed => "failed",
        }
    }
}

/// Accepts what a lab name accepts, at most [`MAX_NAME`] long.
pub fn validate_name(name: &str) -> Result<()> {
    crate::lab::name::validate_as("class", name, MAX_NAME)
}

/// The lab of learner `number` in class `class`.
pub fn lab_name(class: &str, number: u32) -> String {
    format!("{class}-{number}")
}

impl ClassState {
    pub fn learner(&self, name: &str) -> Option<&Learner> {
        self.learners
            .iter()
            .find(|l| l.name == name || l.lab == name || l.number.to_string() == name)
    }

    /// The learner whose token this is, if any (every token is compared).
    pub fn learner_by_token(&self, offered: &str) -> Option<&Learner> {
        let mut found = None;
        for learner in &self.learners {
            if learner.token.matches(offered) {
                found = Some(learner);
            }
        }
        found
    }
}

/// The files of one class.
#[derive(Debug, Clone)]
pub struct ClassDir {
    pub root: PathBuf,
}

impl ClassDir {
    pub fn new(name: &str) -> Self {
        ClassDir {
            root: home().join("classes").join(name),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("class.json")
    }

    pub fn exists(&self) -> bool {
        self.state_file().exists()
    }

    pub fn load(&self) -> Result<ClassState> {
        let path = self.state_file();
        let text = fs::read_to_string(&path).map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                let name = self
                    .root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Error::usage(format!(
                    "no class '{name}' here: `goblog-lab class ls` lists the classes, `goblog-lab class create --name {name}` makes it"
                ))
            } else {
                Error::failed(format!("reading {}: {err}", path.display()))
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|err| Error::failed(format!("reading {}: {err}", path.display())))
    }

    pub fn save(&self, state: &ClassState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).expect("class state serialises");
        write_secret(&self.state_file(), &json)
    }

    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.root) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::failed(format!(
                "removing {}: {err}",
                self.root.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// The classes with a saved state, by name.
pub fn saved_classes() -> Vec<String> {
    crate::lab::state::saved_in(&home().join("classes"), "class.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learner(number: u32) -> Learner {
        Learner {
            number,
            name: format!("learner-{number}"),
            lab: lab_name("c", number),
            token: Token::generate().unwrap(),
            status: LearnerStatus::Ready,
            error: None,
            last_deploy_unix: None,
        }
    }

    #[test]
    fn a_token_finds_its_own_learner_only() {
        let class = ClassState {
            name: "c".into(),
            driver: Default::default(),
            created_unix: 0,
            board_token: Token::generate().unwrap(),
            learners: vec![learner(1), learner(2)],
        };
        let second = class.learners[1].token.reveal().to_string();
        assert_eq!(class.learner_by_token(&second).unwrap().number, 2);
        assert!(class.learner_by_token(class.board_token.reveal()).is_none());
        assert_eq!(class.learner("2").unwrap().lab, "c-2");
        assert_eq!(class.learner("learner-1").unwrap().number, 1);
    }

    #[test]
    fn class_names_leave_room_for_the_lab_number() {
        assert!(validate_name("workshop-day1").is_ok());
        for bad in ["", "Class", "a_b", "-a", "a-", "abcdefghijklmnopqrstu"] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid class name"), "{bad}: {err}");
        }
        // The longest class name with a three-digit learner is a valid lab name.
        crate::lab::name::validate(&lab_name("abcdefghijklmnopqrst", 100)).unwrap();
    }
}
