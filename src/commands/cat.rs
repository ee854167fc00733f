//! `cat`: decrypted JSON of one object, for key holders debugging.

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
            serde_json::to_value(SnapshotDump { id, snapshot: s }).expect("snapshot serializes")
        }
        What::Index { id } => {
            let seg: IndexSegment = repo.load_object(&parse_id::<SegmentId>(id)?)?;
            serde_json::to_value(IndexDump::from(&seg)).expect("index dump serializes")
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

/// `cat snapshot`: the manifest with its id.
#[derive(serde::Serialize)]
struct SnapshotDump {
    id: custody::SnapshotId,
    #[serde(flatten)]
    snapshot: custody::format::snapshot::Snapshot,
}

/// `cat index`: a segment's listings, one object per pack.
#[derive(serde::Serialize)]
struct IndexDump {
    packs: Vec<PackDump>,
}

#[derive(serde::Serialize)]
struct PackDump {
    pack: custody::PackId,
    session: custody::SessionId,
    blobs: Vec<BlobDump>,
}

#[derive(serde::Serialize)]
struct BlobDump {
    id: custody::BlobId,
    #[serde(rename = "type")]
    blob_type: custody::pack::BlobType,
    compression: custody::compress::Compression,
    offset: u32,
    length: u32,
    raw_length: u32,
}

impl From<&IndexSegment> for IndexDump {
    fn from(seg: &IndexSegment) -> IndexDump {
        IndexDump {
            packs: seg
                .packs
                .iter()
                .map(|p| PackDump {
                    pack: p.pack,
                    session: p.session,
                    blobs: p
                        .blobs
                        .iter()
                        .map(|b| BlobDump {
                            id: b.id,
                            blob_type: b.blob_type,
                            compression: b.compression,
                            offset: b.offset,
                            length: b.length,
                            raw_length: b.raw_length,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
