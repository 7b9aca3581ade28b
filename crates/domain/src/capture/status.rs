//! Statuses of events and forms (OpenClinica §6.3–6.4) and the automatic moves between them.
//!
//! Manual moves (stop, skip, lock, sign) and their role rules arrive with the use cases that
//! make them; this module holds what every save relies on: which statuses accept data, and the
//! automatic moves an event makes when its forms are saved and completed.

use serde::{Deserialize, Serialize};

/// The status of an event occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Scheduled,
    DataEntryStarted,
    Completed,
    Stopped,
    Skipped,
    Locked,
    Signed,
}

impl EventStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::DataEntryStarted => "data_entry_started",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::Skipped => "skipped",
            Self::Locked => "locked",
            Self::Signed => "signed",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "scheduled" => Self::Scheduled,
            "data_entry_started" => Self::DataEntryStarted,
            "completed" => Self::Completed,
            "stopped" => Self::Stopped,
            "skipped" => Self::Skipped,
            "locked" => Self::Locked,
            "signed" => Self::Signed,
            _ => return None,
        })
    }

    /// Why data cannot be entered in an event in this status, if it cannot. A signed event
    /// accepts changes (they break the signature); locked, stopped and skipped events do not.
    #[must_use]
    pub fn refuses_data(self) -> Option<&'static str> {
        match self {
            Self::Locked => Some("the event is locked"),
            Self::Stopped => Some("the event is stopped"),
            Self::Skipped => Some("the event is skipped"),
            _ => None,
        }
    }

    /// The status after a form of the event was saved: the first save starts data entry.
    #[must_use]
    pub fn after_save(self) -> Self {
        match self {
            Self::Scheduled => Self::DataEntryStarted,
            other => other,
        }
    }

    /// The status after a form was completed, given whether every required form of the event
    /// is now complete: the event completes by itself.
    #[must_use]
    pub fn after_form_completed(self, all_required_complete: bool) -> Self {
        match self {
            Self::Scheduled | Self::DataEntryStarted if all_required_complete => Self::Completed,
            Self::Scheduled => Self::DataEntryStarted,
            other => other,
        }
    }
}

/// The data-entry stage of a form (without double data entry, which builds on this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormStatus {
    /// Being entered; partial saves allowed.
    InitialDataEntry,
    /// Marked complete; later changes are administrative edits.
    Complete,
}

impl FormStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InitialDataEntry => "initial_data_entry",
            Self::Complete => "complete",
        }
    }

    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "initial_data_entry" => Some(Self::InitialDataEntry),
            "complete" => Some(Self::Complete),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_move_by_themselves_on_save_and_completion() {
        assert_eq!(EventStatus::Scheduled.after_save(), EventStatus::DataEntryStarted);
        assert_eq!(EventStatus::Signed.after_save(), EventStatus::Signed);
        assert_eq!(EventStatus::DataEntryStarted.after_form_completed(false), EventStatus::DataEntryStarted);
        assert_eq!(EventStatus::DataEntryStarted.after_form_completed(true), EventStatus::Completed);
        assert_eq!(EventStatus::Scheduled.after_form_completed(false), EventStatus::DataEntryStarted);
        assert!(EventStatus::Locked.refuses_data().is_some());
        assert!(EventStatus::Completed.refuses_data().is_none());
        for s in ["scheduled", "data_entry_started", "completed", "stopped", "skipped", "locked", "signed"] {
            assert_eq!(EventStatus::parse(s).map(EventStatus::as_str), Some(s));
        }
    }
}
