//! The resource vector: what a node has and a workload asks for.
//!
//! Two dimensions today. Every comparison goes through [`Dimension::ALL`],
//! so a third (disk, GPU slots) is one variant and one field, not a hunt
//! through the scheduler.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// One resource dimension.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
#[serde(rename_all = "kebab-case")]
pub enum Dimension {
    /// CPU, millicores.
    Cpu,
    /// Memory, bytes.
    Memory,
}

impl Dimension {
    /// Every dimension, in report order.
    pub const ALL: [Dimension; 2] = [Dimension::Cpu, Dimension::Memory];

    /// Stable lowercase name, as in placement-failure reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Cpu => "cpu",
            Dimension::Memory => "memory",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of every dimension.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode,
)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Resources {
    /// CPU, millicores (1000 = one core). Default 0.
    pub cpu_millicores: u64,
    /// Memory, bytes. Default 0.
    pub memory_bytes: u64,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        cpu_millicores: 0,
        memory_bytes: 0,
    };

    /// `cpu` millicores and `memory` bytes.
    pub const fn new(cpu_millicores: u64, memory_bytes: u64) -> Self {
        Resources {
            cpu_millicores,
            memory_bytes,
        }
    }

    /// The amount of one dimension.
    pub fn get(&self, d: Dimension) -> u64 {
        match d {
            Dimension::Cpu => self.cpu_millicores,
            Dimension::Memory => self.memory_bytes,
        }
    }

    fn get_mut(&mut self, d: Dimension) -> &mut u64 {
        match d {
            Dimension::Cpu => &mut self.cpu_millicores,
            Dimension::Memory => &mut self.memory_bytes,
        }
    }

    /// Per-dimension sum, saturating.
    pub fn saturating_add(self, o: Resources) -> Resources {
        let mut r = self;
        for d in Dimension::ALL {
            *r.get_mut(d) = self.get(d).saturating_add(o.get(d));
        }
        r
    }

    /// Per-dimension difference, floored at zero.
    pub fn saturating_sub(self, o: Resources) -> Resources {
        let mut r = self;
        for d in Dimension::ALL {
            *r.get_mut(d) = self.get(d).saturating_sub(o.get(d));
        }
        r
    }

    /// Per-dimension maximum.
    pub fn max(self, o: Resources) -> Resources {
        let mut r = self;
        for d in Dimension::ALL {
            *r.get_mut(d) = self.get(d).max(o.get(d));
        }
        r
    }

    /// The first dimension in which `self` exceeds `limit`, if any.
    pub fn exceeds(&self, limit: &Resources) -> Option<Dimension> {
        Dimension::ALL
            .into_iter()
            .find(|&d| self.get(d) > limit.get(d))
    }

    /// Whether every dimension is zero.
    pub fn is_zero(&self) -> bool {
        Dimension::ALL.into_iter().all(|d| self.get(d) == 0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} millicores / {} MiB",
            self.cpu_millicores,
            self.memory_bytes / (1024 * 1024)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_names_the_first_exceeded_dimension() {
        let a = Resources::new(100, 10);
        let b = Resources::new(50, 20);
        assert_eq!(a.saturating_add(b), Resources::new(150, 30));
        assert_eq!(a.saturating_sub(b), Resources::new(50, 0));
        assert_eq!(a.max(b), Resources::new(100, 20));
        assert_eq!(a.exceeds(&b), Some(Dimension::Cpu));
        assert_eq!(b.exceeds(&a), Some(Dimension::Memory));
        assert_eq!(a.exceeds(&a), None);
        assert!(Resources::ZERO.is_zero());
    }
}
