//! The module table: each module a desired instance names is fetched
//! (bytes here, hash verified), then compiled (or loaded from the
//! compiled-module disk cache), once however many instances use it.
//! Instances wait in [`Phase::WaitingForModule`] meanwhile, holding no
//! capacity; a module that is missing waits for the region to deliver it
//! (each new desired set retries the fetch) instead of crash-looping its
//! instances, and one that does not compile stops them until their spec
//! names another.

use std::collections::BTreeSet;

use super::{Lifecycle, Phase};
use crate::workload::command::{Command, ModuleFailure};
use crate::workload::model::InstanceKey;

/// Where one module is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleState {
    /// `FetchModule` commanded.
    Fetching,
    /// Not here (or corrupt here): waiting for the region to deliver it.
    Missing {
        /// What the driver found.
        reason: String,
    },
    /// `CompileModule` commanded.
    Compiling,
    /// Loadable: instances may start.
    Ready,
    /// Does not compile; no instance can run it.
    Invalid {
        /// The runtime's explanation.
        reason: String,
    },
}

impl Lifecycle {
    /// After a desired set: fetches modules newly named (and retries the
    /// missing ones), drops those no instance names any more.
    pub(super) fn sync_modules(&mut self) {
        let named: BTreeSet<String> = self
            .instances
            .values()
            .map(|i| i.want.artifact_sha256.clone())
            .collect();
        let unused: Vec<String> = self
            .modules
            .keys()
            .filter(|sha| !named.contains(*sha))
            .cloned()
            .collect();
        for sha256 in unused {
            self.modules.remove(&sha256);
            self.commands.push_back(Command::DropModule { sha256 });
        }
        for sha256 in named {
            let fetch = match self.modules.get(&sha256) {
                None | Some(ModuleState::Missing { .. }) => true,
                Some(_) => false,
            };
            if fetch {
                self.modules.insert(sha256.clone(), ModuleState::Fetching);
                self.commands.push_back(Command::FetchModule { sha256 });
            }
        }
    }

    /// The driver has the module's verified bytes: compile it.
    pub fn handle_module_fetched(&mut self, sha256: &str) {
        if let Some(st @ ModuleState::Fetching) = self.modules.get_mut(sha256) {
            *st = ModuleState::Compiling;
            self.commands.push_back(Command::CompileModule {
                sha256: sha256.to_owned(),
            });
        }
    }

    /// The module is loadable: its waiting instances enter admission,
    /// highest priority first.
    pub fn handle_module_ready(&mut self, sha256: &str, now_ms: u64) {
        match self.modules.get_mut(sha256) {
            Some(st @ (ModuleState::Fetching | ModuleState::Compiling)) => {
                *st = ModuleState::Ready;
            }
            _ => return,
        }
        let keys = self.waiting_for(sha256);
        self.enter_in_order(keys, now_ms);
    }

    /// The module could not be made ready. Missing: its instances keep
    /// waiting (the next desired set fetches it again). Invalid: they stop
    /// with the reason.
    pub fn handle_module_failed(&mut self, sha256: &str, failure: ModuleFailure, now_ms: u64) {
        let Some(st) = self.modules.get_mut(sha256) else {
            return;
        };
        if !matches!(st, ModuleState::Fetching | ModuleState::Compiling) {
            return;
        }
        *st = match failure {
            ModuleFailure::Missing { reason } => ModuleState::Missing { reason },
            ModuleFailure::Invalid { reason } => ModuleState::Invalid { reason },
        };
        if matches!(st, ModuleState::Invalid { .. }) {
            let keys = self.waiting_for(sha256);
            self.enter_in_order(keys, now_ms);
        }
    }

    /// Modules the region must deliver again.
    pub fn missing_modules(&self) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(_, st)| matches!(st, ModuleState::Missing { .. }))
            .map(|(sha, _)| sha.clone())
            .collect()
    }

    /// A module's state, if a desired instance names it.
    pub fn module(&self, sha256: &str) -> Option<&ModuleState> {
        self.modules.get(sha256)
    }

    fn waiting_for(&self, sha256: &str) -> Vec<InstanceKey> {
        self.instances
            .iter()
            .filter(|(_, i)| i.phase == Phase::WaitingForModule && i.want.artifact_sha256 == sha256)
            .map(|(k, _)| k.clone())
            .collect()
    }
}
