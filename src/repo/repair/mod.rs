//! `repair index` and `repair snapshots`: what a key holder does after objects were lost or
//! damaged. Neither deletes data: `repair index` lists packs again from their own
//! authenticated headers; `repair snapshots` writes new snapshots of what is still intact;
//! `repair undelete` makes objects current again from a versioned bucket's history.

mod index;
mod snapshots;
mod undelete;

pub use index::{repair_index, RepairIndexReport};
pub use snapshots::{repair_snapshots, RepairSnapshotsReport};
pub use undelete::{undelete, UndeleteReport};
