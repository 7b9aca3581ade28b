//! Data capture: item values, form evaluation (calculations, skip logic, edit checks) and the
//! status machines of participants, events and forms.

pub mod evaluate;
pub mod rule_data;
pub mod status;
pub mod values;
