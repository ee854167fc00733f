//! `cat`: decrypted JSON of one object, for key holders debugging.

use serde_json::json;

use super::{Ctx, FilterArgs, Outcome};
use custody::error::{Error, Result};
use custody::format::index::IndexSegment;
use custody::id::{SegmentId, TreeId};
use custody::store::FileKind;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum What {
    /// The repository config (after verifying its MAC).
    Config,
    /// A snapshot manifest (id, prefix or `latest`).
    Snapshot {
        id: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// An index segment.
    Index { id: String },
    /// A tree blob.
    Tree { id: String },
    /// A wrapped-key record (the key stays wrapped).
    Key { id: String },
}

fn parse_id<T: std::str::FromStr<Err = custody::Error>>(s: &str) -> Result<T> {
    s.parse()
}

pub fn run(ctx: &Ctx, what: &What) -> Result<Outcome> {
    let repo = ctx.open_repo()?;
    let v = match what {
        What::Config => serde_json::to_value(repo.config()).expect("config serializes"),
        What::Snapshot { id, filter } => {
            let (id, s) = repo.resolve_snapshot(id, &filter.filter())?;
            let mut v = serde_json::to_value(s).expect("snapshot serializes");
            v["id"] = json!(id);
            v
        }
        What::Index { id } => {
            let seg: IndexSegment = repo.load_object(&parse_id::<SegmentId>(id)?)?;
            let packs: Vec<_> = seg
                .packs
                .iter()
                .map(|p| {
                    json!({"pack": p.pack, "session": p.session, "blobs": p.blobs.iter().map(|b| json!({
                        "id": b.id, "type": b.blob_type, "compression": b.compression,
                        "offset": b.offset, "length": b.length, "raw_length": b.raw_length,
                    })).collect::<Vec<_>>()})
                })
                .collect();
            json!({"packs": packs})
        }
        What::Tree { id } => {
            let index = repo.load_index()?;
            serde_json::to_value(repo.load_tree(&index, &parse_id::<TreeId>(id)?)?)
                .expect("tree serializes")
        }
        What::Key { id } => {
            let id = parse_id(id)?;
            let b = repo.store().get(FileKind::Key, &id)?;
            serde_json::from_slice(&b).map_err(|e| Error::integrity(format!("keys/{id}"), e))?
        }
    };
    super::out_line(serde_json::to_string_pretty(&v).expect("value serializes"));
    Ok(Outcome::OK)
}
