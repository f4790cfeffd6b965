// What NodeStage/NodePublish must remember across restarts and reboots: where a volume is
// staged and where it is published. One small record per volume, replaced atomically.
import fs from 'node:fs/promises';
import path from 'node:path';
import { readJson, writeJsonAtomic, removeFile } from './host/atomic.js';
import type { AccessType } from './backends/backend.js';

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
  accessType: AccessType;
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

export class NodeStateStore {
  constructor(private readonly dir: string) {}

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(volumeId: string) {
    return path.join(this.dir, `${volumeId}.json`);
  }

  get(volumeId: string): Promise<NodeVolumeState | undefined> {
    return readJson<NodeVolumeState>(this.file(volumeId));
  }

  put(s: NodeVolumeState): Promise<void> {
    return writeJsonAtomic(this.file(s.volumeId), s);
  }

  remove(volumeId: string): Promise<void> {
    return removeFile(this.file(volumeId));
  }

  async all(): Promise<NodeVolumeState[]> {
    const out: NodeVolumeState[] = [];
    for (const n of await fs.readdir(this.dir)) {
      if (!n.endsWith('.json')) continue;
      const s = await readJson<NodeVolumeState>(path.join(this.dir, n));
      if (s) out.push(s);
    }
    return out;
  }
}
