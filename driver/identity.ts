// The CSI Identity service.
import fs from 'node:fs/promises';
import { DriverContext } from './context.js';
import type * as T from '../proto/types.js';

/** Whether this driver serves the controller side (its --mode is all or controller). */
export interface ServedServices {
  controller: boolean;
}

export class IdentityService {
  constructor(
    private readonly ctx: DriverContext,
    private readonly probeDirs: string[],
    private readonly served: ServedServices = { controller: true },
  ) {}

  async GetPluginInfo(): Promise<T.GetPluginInfoResponse> {
    return { name: this.ctx.config.driverName, vendor_version: this.ctx.config.version, manifest: {} };
  }

  /**
   * Only what this mode serves: a CO that sees CONTROLLER_SERVICE (or the group controller,
   * snapshot metadata) on a node plugin sends it calls that can only fail there.
   */
  async GetPluginCapabilities(): Promise<T.GetPluginCapabilitiesResponse> {
    const controller: T.PluginCapability[] = this.served.controller
      ? [
          { service: { type: 'CONTROLLER_SERVICE' } },
          { service: { type: 'GROUP_CONTROLLER_SERVICE' } },
          // Loop and LVM snapshots are usable only on their node, and say so (RBD's everywhere).
          { service: { type: 'SNAPSHOT_ACCESSIBILITY_CONSTRAINTS' } },
          ...([...this.ctx.backends.values()].some((b) => b.snapshotBlocks) ? [{ service: { type: 'SNAPSHOT_METADATA_SERVICE' as const } }] : []),
        ]
      : [];
    return {
      capabilities: [
        ...controller,
        // Both sides: the node's NodeGetInfo topology is half of what the CO matches.
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        // Online expansion is EXPAND_VOLUME on either side, and both have it.
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
