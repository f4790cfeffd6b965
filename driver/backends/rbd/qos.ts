// QoS limits of an RBD volume as mutable parameters (CreateVolume's mutable_parameters, then
// ControllerModifyVolume from a VolumeAttributesClass): librbd's rbd_qos_* options set on the
// image itself (`rbd config image set`, kept in its image-meta as conf_<option>), so they
// travel with the image and apply to every librbd client that opens it — rbd-fuse (the fuse
// mapper), rbd-nbd, QEMU. The kernel's rbd driver (the krbd mapper) does not implement them.

/** Parameter name -> librbd option; values are per second (operations, or bytes), 0 meaning no limit. */
export const QOS_OPTIONS: Readonly<Record<string, string>> = {
  qosIopsLimit: 'rbd_qos_iops_limit',
  qosReadIopsLimit: 'rbd_qos_read_iops_limit',
  qosWriteIopsLimit: 'rbd_qos_write_iops_limit',
  qosBpsLimit: 'rbd_qos_bps_limit',
  qosReadBpsLimit: 'rbd_qos_read_bps_limit',
  qosWriteBpsLimit: 'rbd_qos_write_bps_limit',
};

/** librbd reads these options as unsigned 64-bit; a signed maximum keeps every tool's parser happy. */
const QOS_MAX = 2n ** 63n - 1n;

/** What is wrong with a QoS value (undefined: nothing): a whole number, 0 for no limit. */
export function checkQosValue(value: string): string | undefined {
  if (!/^(0|[1-9][0-9]{0,18})$/.test(value) || BigInt(value) > QOS_MAX) return `must be a whole number per second (0: no limit), not ${JSON.stringify(value.slice(0, 32))}`;
  return undefined;
}

/**
 * The `rbd config image` arguments (after the image spec's place is filled) that bring the
 * image's QoS options, as its image-meta `meta` shows them, to what `mutable` asks: set what
 * differs, remove what is not asked (a clone inherits its parent's image-meta, limits included).
 */
export function qosCommands(spec: string, meta: Readonly<Record<string, string>>, mutable: Readonly<Record<string, string>>): string[][] {
  const out: string[][] = [];
  for (const [param, option] of Object.entries(QOS_OPTIONS)) {
    const want = mutable[param];
    const have = meta[`conf_${option}`];
    if (want !== undefined && want !== have) out.push(['config', 'image', 'set', spec, option, want]);
    else if (want === undefined && have !== undefined) out.push(['config', 'image', 'remove', spec, option]);
  }
  return out;
}
