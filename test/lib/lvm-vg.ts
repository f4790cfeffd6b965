// A throwaway volume group on a loop-backed PV, made and inspected with a private lvm
// configuration that sees only that PV.
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { loopDevicesUnder } from './driver-harness.js';

export class TestVg {
  private constructor(
    readonly dir: string,
    readonly name: string,
    /** The PVs in vgcreate order; lvm allocates from the first that has room. */
    readonly pvs: string[],
  ) {}

  /** The first PV (the only one of a VG made with one). */
  get pv(): string {
    return this.pvs[0];
  }

  /**
   * A VG on one PV of sizeGiB, or on several PVs of these sizes in MiB. deviceMapper: lvm may
   * activate (a kernel with device-mapper: the guest tier), without udev; a name with '-' in it.
   * name: the VG's (default: one of its own, unique to the process). systemId: the lvm system
   * ID the private configuration has, so the VG is made with it (vgcreate takes the host's).
   */
  static async create(dir: string, sizeGiB = 4, pvSizesMiB: number[] = [sizeGiB * 1024], opts: { deviceMapper?: boolean; name?: string; systemId?: string } = {}): Promise<TestVg> {
    await fs.mkdir(path.join(dir, 'lvmconf'), { recursive: true });
    const pvs: string[] = [];
    for (const [i, mib] of pvSizesMiB.entries()) {
      const img = path.join(dir, i === 0 ? 'pv.img' : `pv${i}.img`);
      await execa('truncate', ['-s', `${mib}M`, img]);
      pvs.push((await execa('losetup', ['-f', '--show', img])).stdout.trim());
    }
    const accept = pvs.map((pv) => `"a|^${pv}$|", `).join('');
    await fs.writeFile(
      path.join(dir, 'lvmconf', 'lvm.conf'),
      `devices { filter = [ ${accept}"r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }\nbackup { backup = 0 archive = 0 }\n` +
        `global { activation = ${opts.deviceMapper ? 1 : 0}${opts.systemId ? ' system_id_source = "lvmlocal"' : ''} }\nactivation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n` +
        (opts.systemId ? `local { system_id = "${opts.systemId}" }\n` : ''),
    );
    const vg = new TestVg(dir, opts.name ?? `tscsi${opts.deviceMapper ? '-dm-' : 'test'}${process.pid}${Math.floor(Math.random() * 1e6)}`, pvs);
    await vg.lvm(['vgcreate', '-q', vg.name, ...pvs]);
    return vg;
  }

  lvm(args: string[]) {
    return execa('lvm', args, { env: { LVM_SYSTEM_DIR: path.join(this.dir, 'lvmconf'), LVM_SUPPRESS_FD_WARNINGS: '1' } });
  }

  /** LV name -> tags, straight from lvm2. */
  async lvs(): Promise<Map<string, string[]>> {
    const r = await this.lvm(['lvs', '--reportformat', 'json', '-o', 'lv_name,lv_tags', this.name]);
    const rows = (JSON.parse(r.stdout) as { report: Array<{ lv: Array<{ lv_name: string; lv_tags: string }> }> }).report[0].lv;
    return new Map(rows.map((x) => [x.lv_name, x.lv_tags ? x.lv_tags.split(',') : []]));
  }

  /** The VG's free bytes, as lvm2 reports them. */
  async freeBytes(): Promise<bigint> {
    const r = await this.lvm(['vgs', '--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'vg_free', this.name]);
    return BigInt((JSON.parse(r.stdout) as { report: Array<{ vg: Array<{ vg_free: string }> }> }).report[0].vg[0].vg_free);
  }

  /** Detaches the PV and any window the driver left over it (the metadata goes with the file). */
  async destroy(): Promise<void> {
    // Active LVs (device-mapper) hold the PV open: deactivate first (a no-op without activation).
    await this.lvm(['vgchange', '-q', '-an', this.name]).catch(() => undefined);
    for (const d of await loopDevicesUnder(this.dir)) await execa('losetup', ['-d', d], { reject: false });
  }

  /** destroy(), then the directory with the PV images and the private lvm configuration. */
  async remove(): Promise<void> {
    await this.destroy();
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  /** CreateVolume parameters that put a volume in this VG. */
  params(): Record<string, string> {
    return { backend: 'lvm', volumeGroup: this.name };
  }
}
