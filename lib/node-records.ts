// The node service's record of one volume (NodeStage/NodePublish): where it is staged and
// published. The driver writes one JSON file per volume under --state-dir (driver/nodestate.ts);
// `tscsi-cli status` reads them to show a node's view. The format is defined here once.
import fs from 'node:fs/promises';
import path from 'node:path';

export interface NodePublication {
  readonly: boolean;
  mode: string;
  /**
   * NodePublish made the target (directory or file) itself, so NodeUnpublish removes it;
   * a target the CO made is left alone. Absent in records of older versions: not ours.
   */
  created?: boolean;
}

export interface NodeVolumeState {
  volumeId: string;
  stagingPath: string;
  accessType: 'mount' | 'block';
  fsType: string;
  mountFlags: string[];
  mode: string;
  publications: Record<string, NodePublication>;
  /**
   * The device NodeStage attached, so NodeUnstage can still find it once the volume's record
   * is gone from its backend (absent in records of older versions).
   */
  device?: string;
  /** Set while mkfs runs on a device that was blank: a retry formats it again. */
  formatting?: boolean;
}

/** The file of a volume's record in the state directory. */
export function nodeRecordFile(dir: string, volumeId: string): string {
  return path.join(dir, `${volumeId}.json`);
}

/**
 * Every record in dir, read-only, for callers outside the driver: a file being replaced (its
 * temporary) or one that does not parse is left out, not fatal. A missing dir is no records.
 */
export async function readNodeRecords(dir: string): Promise<NodeVolumeState[]> {
  const names = await fs.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  const out: NodeVolumeState[] = [];
  for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
    try {
      const r = JSON.parse(await fs.readFile(path.join(dir, n), 'utf8')) as NodeVolumeState;
      if (typeof r.volumeId === 'string') out.push(r);
    } catch {
      // replaced or removed while read: the next look sees it
    }
  }
  return out;
}
