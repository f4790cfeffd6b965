// The CSI Identity service.
import fs from 'node:fs/promises';
import { DriverContext } from './context.js';
import type * as T from '../proto/types.js';

export class IdentityService {
  constructor(
    private readonly ctx: DriverContext,
    private readonly probeDirs: string[],
  ) {}

  async GetPluginInfo(): Promise<T.GetPluginInfoResponse> {
    return { name: this.ctx.config.driverName, vendor_version: this.ctx.config.version, manifest: {} };
  }

  async GetPluginCapabilities(): Promise<T.GetPluginCapabilitiesResponse> {
    return {
      capabilities: [
        { service: { type: 'CONTROLLER_SERVICE' } },
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        { service: { type: 'GROUP_CONTROLLER_SERVICE' } },
        // Loop and LVM snapshots are usable only on their node, and say so (RBD's everywhere).
        { service: { type: 'SNAPSHOT_ACCESSIBILITY_CONSTRAINTS' } },
        ...([...this.ctx.backends.values()].some((b) => b.snapshotBlocks) ? [{ service: { type: 'SNAPSHOT_METADATA_SERVICE' as const } }] : []),
        { volume_expansion: { type: 'ONLINE' } },
      ],
    };
  }

  /** Ready when every backend's state directory can be read and written. */
  async Probe(): Promise<T.ProbeResponse> {
    for (const d of this.probeDirs) {
      try {
        await fs.access(d, fs.constants.R_OK | fs.constants.W_OK);
      } catch {
        return { ready: { value: false } };
      }
    }
    return { ready: { value: true } };
  }
}
