//! `repair index` and `repair snapshots`: what a key holder does after objects were lost or
//! damaged. Neither deletes data: `repair index` lists packs again from their own
//! authenticated headers; `repair snapshots` writes new snapshots of what is still intact.

mod index;
mod snapshots;

pub use index::{repair_index, RepairIndexReport};
pub use snapshots::{repair_snapshots, RepairSnapshotsReport};
