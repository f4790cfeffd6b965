// What NodeStage/NodePublish must remember across restarts and reboots: where a volume is
// staged and where it is published. One small record per volume, replaced atomically.
import fs from 'node:fs/promises';
import path from 'node:path';
import { readJson, writeJsonAtomic, removeFile } from './host/atomic.js';
import { nodeRecordFile, type NodeVolumeState } from '../lib/node-records.js';

export type { NodePublication, NodeVolumeState } from '../lib/node-records.js';

export class NodeStateStore {
  constructor(private readonly dir: string) {}

  async init(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(volumeId: string) {
    return nodeRecordFile(this.dir, volumeId);
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
