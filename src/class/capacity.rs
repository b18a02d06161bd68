//! How many labs this machine holds, decided before anything is made: from
//! its available memory, the free disk where the engine keeps its data, and
//! its cores. Gathering is `preflight::host_facts`; the decision here is
//! pure, so every refusal is unit-tested.

use crate::error::{Error, Result};
use crate::preflight::HostFacts;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// What one default lab of three dind nodes and its console take, from
/// `bench/class.sh` with a class of 10 (docs/classroom.md): `MemAvailable`
/// fell by 215 and 355 MiB a lab in two runs (400 kept here, for the
/// learners' own containers), the engine's data grew by 158 and 182 MiB a
/// lab (300 kept, for their images). Cores: an idle lab costs 3.2 % of one core
/// (docs/performance.md); 8 a core keeps idle labs near a quarter of it,
/// so terminals and creates stay quick.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub memory: u64,
    pub disk: u64,
    /// Labs one core keeps idle without the terminals lagging.
    pub labs_per_core: u32,
}

pub const DIND_LAB: Footprint = Footprint {
    memory: 400 * MIB,
    disk: 300 * MIB,
    labs_per_core: 8,
};

/// Kept free for the server itself and the builds of learners' deploys.
const MEMORY_RESERVE: u64 = GIB;
const DISK_RESERVE: u64 = 2 * GIB;

/// This machine's side of the estimate.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub memory_available: Option<u64>,
    pub disk_free: Option<u64>,
    pub cores: u32,
}

impl Facts {
    pub fn of(host: &HostFacts) -> Facts {
        Facts {
            memory_available: host.memory_available,
            disk_free: host.engine_free.or(host.home_free),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// How many labs fit, and what limits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub labs: u32,
    pub limited_by: String,
}

/// The most labs of `each` that `facts` hold; what is unknown limits nothing.
pub fn labs_that_fit(facts: &Facts, each: &Footprint) -> Fit {
    let mut limits = vec![(
        facts.cores * each.labs_per_core,
        format!("{} cores at {} labs each", facts.cores, each.labs_per_core),
    )];
    if let Some(memory) = facts.memory_available {
        limits.push((
            (memory.saturating_sub(MEMORY_RESERVE) / each.memory) as u32,
            format!(
                "{} MiB of memory available, {} MiB a lab and 1 GiB kept",
                memory / MIB,
                each.memory / MIB
            ),
        ));
    }
    if let Some(disk) = facts.disk_free {
        limits.push((
            (disk.saturating_sub(DISK_RESERVE) / each.disk) as u32,
            format!(
                "{} GiB of disk free, {} MiB a lab and 2 GiB kept",
                disk / GIB,
                each.disk / MIB
            ),
        ));
    }
    let (labs, limited_by) = limits
        .into_iter()
        .min_by_key(|(labs, _)| *labs)
        .expect("the cores are always a limit");
    Fit { labs, limited_by }
}

/// `learners` labs, if they fit; else the one-line refusal.
pub fn check(learners: u32, facts: &Facts, each: &Footprint) -> Result<Fit> {
    if learners == 0 {
        return Err(Error::usage(
            "--learners 0 makes no class: give the number of learners, 1 or more",
        ));
    }
    let fit = labs_that_fit(facts, each);
    if learners > fit.labs {
        return Err(Error::usage(format!(
            "--learners {learners} will not fit on this machine: about {} labs do ({}); use fewer learners or a bigger server",
            fit.labs, fit.limited_by
        )));
    }
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(memory_gib: u64, disk_gib: u64, cores: u32) -> Facts {
        Facts {
            memory_available: Some(memory_gib * GIB),
            disk_free: Some(disk_gib * GIB),
            cores,
        }
    }

    #[test]
    fn zero_learners_is_refused() {
        let err = check(0, &facts(24, 50, 2), &DIND_LAB)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--learners 0"), "{err}");
    }

    #[test]
    fn the_scarcest_resource_decides() {
        // 2 cores hold 16; 24 GiB hold 58; 50 GiB of disk hold 160.
        let fit = labs_that_fit(&facts(24, 50, 2), &DIND_LAB);
        assert_eq!(fit.labs, 16);
        assert!(fit.limited_by.contains("2 cores"), "{}", fit.limited_by);
        // 3 GiB of memory: (3 - 1) GiB / 400 MiB = 5.
        let fit = labs_that_fit(&facts(3, 50, 8), &DIND_LAB);
        assert_eq!(fit.labs, 5);
        assert!(fit.limited_by.contains("memory"), "{}", fit.limited_by);
        // 3 GiB of disk: (3 - 2) GiB / 300 MiB = 3.
        assert_eq!(labs_that_fit(&facts(24, 3, 8), &DIND_LAB).labs, 3);
    }

    #[test]
    fn past_capacity_is_one_line_with_the_reason() {
        let err = check(6, &facts(3, 50, 8), &DIND_LAB)
            .unwrap_err()
            .to_string();
        assert!(err.contains("about 5 labs"), "{err}");
        assert!(err.contains("memory"), "{err}");
        assert!(!err.contains('\n'));
        assert_eq!(check(5, &facts(3, 50, 8), &DIND_LAB).unwrap().labs, 5);
    }

    #[test]
    fn unknown_facts_limit_nothing_but_the_cores() {
        let unknown = Facts {
            memory_available: None,
            disk_free: None,
            cores: 1,
        };
        assert_eq!(labs_that_fit(&unknown, &DIND_LAB).labs, 8);
    }
}
