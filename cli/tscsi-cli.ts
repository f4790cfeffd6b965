#!/usr/bin/env node
// tscsi-cli: a small CSI client for people. It inspects a running driver, or (demo) starts
// one on the loop backend and walks a volume through its whole life, printing each step.
// It is not a sidecar and no part of the driver: it reaches the driver only through CSI
// over its socket (with the sidecars' CSI client), and starts it as its own process.
import { CsiClient, rpcErrorText } from '../sidecars/common/csi-client.js';
import { parseSize } from '../lib/size.js';
import { parseFlags, runMain } from '../lib/process.js';
import { demo } from './demo.js';
import { status } from './status.js';

function show(title: string, value: unknown) {
  process.stdout.write(`\n== ${title}\n${JSON.stringify(value, null, 2)}\n`);
}

const USAGE = `tscsi-cli [--endpoint unix:///run/tscsi/csi.sock] [--state-dir DIR] [--metrics-url URL] COMMAND

  status                     this node's view: each volume with where it is staged and published
                             (the node records under --state-dir, default /var/lib/tscsi/node),
                             and how full each pool is (from the driver's /metrics at --metrics-url)
  info                       plugin name, version, capabilities, node
  volumes                    ListVolumes
  snapshots                  ListSnapshots
  capacity                   GetCapacity
  create NAME SIZE [FSTYPE]  CreateVolume (SIZE like 1Gi, 500M, 1.5Gi: a Kubernetes quantity)
  delete VOLUME_ID           DeleteVolume
  allocated SNAPSHOT_ID      GetMetadataAllocated: the byte ranges of the snapshot that hold data
  delta BASE_ID TARGET_ID    GetMetadataDelta: the byte ranges that changed from BASE to TARGET
                             (two snapshots of one volume, BASE the older)
  demo                       start a driver on a temporary loop backend and walk one volume
                             through create, stage, publish, write, snapshot, restore, expand,
                             stats and delete (needs root)
`;

interface MetadataMessage {
  block_metadata_type: string;
  volume_capacity_bytes: string;
  block_metadata: Array<{ byte_offset: string; size_bytes: string }>;
}

/** A SnapshotMetadata stream as one range a line (offset, length, end; bytes), after the volume's size and the style. */
function printRanges(msgs: MetadataMessage[]): void {
  const head = msgs[0];
  const ranges = msgs.flatMap((m) => m.block_metadata);
  let total = 0n;
  const lines = ranges.map((r) => {
    total += BigInt(r.size_bytes);
    return `${r.byte_offset}\t${r.size_bytes}\t${BigInt(r.byte_offset) + BigInt(r.size_bytes)}`;
  });
  process.stdout.write(`# volume ${head?.volume_capacity_bytes ?? '?'} bytes, ${head?.block_metadata_type ?? '?'} ranges: ${ranges.length}, ${total} bytes\n# offset\tlength\tend\n`);
  if (lines.length > 0) process.stdout.write(`${lines.join('\n')}\n`);
}

/** The one-call commands: each a CSI call and its answer printed. */
async function command(c: CsiClient, cmd: string, args: string[]): Promise<void> {
  switch (cmd) {
    case 'info':
      show('plugin', await c.Identity.GetPluginInfo({}));
      show('plugin capabilities', await c.Identity.GetPluginCapabilities({}));
      show('controller capabilities', await c.Controller.ControllerGetCapabilities({}));
      show('node', await c.Node.NodeGetInfo({}));
      return;
    case 'volumes':
      return show('volumes', await c.Controller.ListVolumes({}));
    case 'snapshots':
      return show('snapshots', await c.Controller.ListSnapshots({}));
    case 'capacity':
      return show('capacity', await c.Controller.GetCapacity({}));
    case 'create': {
      const [name, size, fsType = ''] = args;
      if (!name || !size) throw new Error('usage: create NAME SIZE [FSTYPE]');
      const cap = { mount: { fs_type: fsType }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
      return show('created', await c.Controller.CreateVolume({ name, capacity_range: { required_bytes: parseSize(size).toString() }, volume_capabilities: [cap] }));
    }
    case 'delete':
      if (!args[0]) throw new Error('usage: delete VOLUME_ID');
      await c.Controller.DeleteVolume({ volume_id: args[0] });
      process.stdout.write(`deleted ${args[0]}\n`);
      return;
    case 'allocated':
      if (!args[0]) throw new Error('usage: allocated SNAPSHOT_ID');
      return printRanges(await c.SnapshotMetadata.GetMetadataAllocated({ snapshot_id: args[0] }));
    case 'delta':
      if (!args[0] || !args[1]) throw new Error('usage: delta BASE_ID TARGET_ID');
      return printRanges(await c.SnapshotMetadata.GetMetadataDelta({ base_snapshot_id: args[0], target_snapshot_id: args[1] }));
    default:
      throw new Error(`unknown command ${cmd}\n${USAGE}`);
  }
}

async function main(): Promise<void> {
  const flags = parseFlags(
    USAGE,
    {
      endpoint: { type: 'string', default: 'unix:///run/tscsi/csi.sock' },
      'state-dir': { type: 'string', default: '/var/lib/tscsi/node' },
      'metrics-url': { type: 'string' },
    },
    true,
  );
  if (!flags) return;
  const [cmd, ...args] = flags.positionals;
  if (!cmd) {
    process.stdout.write(USAGE);
    return;
  }
  if (cmd === 'demo') return demo();
  const c = new CsiClient(flags.values.endpoint as string);
  try {
    if (cmd === 'status') process.stdout.write(await status(c, { stateDir: flags.values['state-dir'] as string, metricsUrl: flags.values['metrics-url'] as string | undefined }));
    else await command(c, cmd, args);
  } finally {
    c.close();
  }
}

runMain('tscsi-cli', main, rpcErrorText);
