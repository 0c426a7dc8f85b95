//! The host's side of [`provider_abi::HostServices`]: what a provider instance's `notify`
//! and `set_status` calls do.

use crossbeam_channel::Sender;
use provider_abi::abi_stable::sabi_trait::TD_Opaque;
use provider_abi::abi_stable::std_types::{RArc, RString};
use provider_abi::host::{HostObject, HostServices, HostServices_TO, NoticeAbi, ProviderStateAbi};
use provider_abi::{Notice, ProviderState};

use crate::providers::status::StatusTable;

/// Something a provider instance told the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderNotice {
    /// The instance.
    pub instance: String,
    /// What it said.
    pub notice: Notice,
}

/// The services of one instance: its name, the status table and where notices go.
#[derive(Clone)]
struct InstanceServices {
    instance: String,
    status: StatusTable,
    notices: Sender<ProviderNotice>,
}

impl HostServices for InstanceServices {
    fn notify(&self, notice: NoticeAbi) {
        // A notice this host does not know (from a newer provider-abi) is dropped.
        if let Ok(notice) = notice.as_enum() {
            let notice = ProviderNotice {
                instance: self.instance.clone(),
                notice: *notice,
            };
            if self.notices.send(notice).is_err() {
                log::debug!("{}: notice after shutdown dropped", self.instance);
            }
        }
    }

    fn set_status(&self, state: ProviderStateAbi, text: RString) {
        let state = state.as_enum().copied().unwrap_or(ProviderState::Error);
        self.status.set(&self.instance, state, text.as_str());
    }
}

/// The host object handed to instance `instance` when it is opened.
pub fn for_instance(
    instance: &str,
    status: &StatusTable,
    notices: &Sender<ProviderNotice>,
) -> HostObject {
    HostServices_TO::from_ptr(
        RArc::new(InstanceServices {
            instance: instance.to_owned(),
            status: status.clone(),
            notices: notices.clone(),
        }),
        TD_Opaque,
    )
}
