// Original file: proto/csi.proto

export const VolumeHealthErrorType = {
  UNKNOWN_VOLUME_HEALTH_TYPE: 'UNKNOWN_VOLUME_HEALTH_TYPE',
  /**
   * The volume is usable but is not operating optimally.
   */
  DEGRADED: 'DEGRADED',
  /**
   * The volume is not accessible.
   * When a volume is reported as INACCESSIBLE in
   * ControllerListVolumeHealth or ControllerGetVolumeHealth
   * RPC calls, the CO MAY interpret the result as
   * volume not being accessible from all nodes in the cluster.
   * 
   * When a volume is reported as INACCESSIBLE in NodeGetVolumeHealth
   * RPC call the CO MAY interpret the result as volume not
   * being accessible from that node.
   */
  INACCESSIBLE: 'INACCESSIBLE',
  /**
   * Permanent data loss is known or strongly suspected on the
   * underlying volume. The CO MAY use this signal to inform
   * users to trigger recovery workflows such as restoring from
   * a snapshot or replica.
   */
  DATA_LOSS: 'DATA_LOSS',
} as const;

export type VolumeHealthErrorType =
  | 'UNKNOWN_VOLUME_HEALTH_TYPE'
  | 0
  /**
   * The volume is usable but is not operating optimally.
   */
  | 'DEGRADED'
  | 1
  /**
   * The volume is not accessible.
   * When a volume is reported as INACCESSIBLE in
   * ControllerListVolumeHealth or ControllerGetVolumeHealth
   * RPC calls, the CO MAY interpret the result as
   * volume not being accessible from all nodes in the cluster.
   * 
   * When a volume is reported as INACCESSIBLE in NodeGetVolumeHealth
   * RPC call the CO MAY interpret the result as volume not
   * being accessible from that node.
   */
  | 'INACCESSIBLE'
  | 2
  /**
   * Permanent data loss is known or strongly suspected on the
   * underlying volume. The CO MAY use this signal to inform
   * users to trigger recovery workflows such as restoring from
   * a snapshot or replica.
   */
  | 'DATA_LOSS'
  | 3

export type VolumeHealthErrorType__Output = typeof VolumeHealthErrorType[keyof typeof VolumeHealthErrorType]
