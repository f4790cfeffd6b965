// Original file: proto/csi.proto

import type { TopologyRequirement as _csi_v1_TopologyRequirement, TopologyRequirement__Output as _csi_v1_TopologyRequirement__Output } from '../../csi/v1/TopologyRequirement';

export interface CreateSnapshotRequest {
  /**
   * The ID of the source volume to be snapshotted.
   * This field is REQUIRED.
   */
  'source_volume_id'?: (string);
  /**
   * The suggested name for the snapshot. This field is REQUIRED for
   * idempotency.
   * Any Unicode string that conforms to the length limit is allowed
   * except those containing the following banned characters:
   * U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F.
   * (These are control characters other than commonly used whitespace.)
   */
  'name'?: (string);
  /**
   * Secrets required by plugin to complete snapshot creation request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets'?: ({[key: string]: string});
  /**
   * Plugin specific parameters passed in as opaque key-value pairs.
   * This field is OPTIONAL. The Plugin is responsible for parsing and
   * validating these parameters. COs will treat these as opaque.
   * Use cases for opaque parameters:
   * - Specify a policy to automatically clean up the snapshot.
   * - Specify an expiration date for the snapshot.
   * - Specify whether the snapshot is readonly or read/write.
   * - Specify if the snapshot should be replicated to some place.
   * - Specify primary or secondary for replication systems that
   * support snapshotting only on primary.
   */
  'parameters'?: ({[key: string]: string});
  /**
   * Specifies where (regions, zones, racks, etc.) the provisioned
   * snapshot MUST be usable from. A snapshot is usable from a location
   * if volumes created from that snapshot are guaranteed to be
   * accessible from that location.
   * An SP SHALL advertise the requirements for topological
   * accessibility information in documentation. COs SHALL only specify
   * topological accessibility information supported by the SP.
   * This field is OPTIONAL.
   * This field SHALL NOT be specified unless the SP has the
   * SNAPSHOT_ACCESSIBILITY_CONSTRAINTS plugin capability.
   * If this field is not specified and the SP has the
   * SNAPSHOT_ACCESSIBILITY_CONSTRAINTS plugin capability, the SP MAY
   * choose where the provisioned snapshot is usable from.
   */
  'accessibility_requirements'?: (_csi_v1_TopologyRequirement | null);
}

export interface CreateSnapshotRequest__Output {
  /**
   * The ID of the source volume to be snapshotted.
   * This field is REQUIRED.
   */
  'source_volume_id': (string);
  /**
   * The suggested name for the snapshot. This field is REQUIRED for
   * idempotency.
   * Any Unicode string that conforms to the length limit is allowed
   * except those containing the following banned characters:
   * U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F.
   * (These are control characters other than commonly used whitespace.)
   */
  'name': (string);
  /**
   * Secrets required by plugin to complete snapshot creation request.
   * This field is OPTIONAL. Refer to the `Secrets Requirements`
   * section on how to use this field.
   */
  'secrets': ({[key: string]: string});
  /**
   * Plugin specific parameters passed in as opaque key-value pairs.
   * This field is OPTIONAL. The Plugin is responsible for parsing and
   * validating these parameters. COs will treat these as opaque.
   * Use cases for opaque parameters:
   * - Specify a policy to automatically clean up the snapshot.
   * - Specify an expiration date for the snapshot.
   * - Specify whether the snapshot is readonly or read/write.
   * - Specify if the snapshot should be replicated to some place.
   * - Specify primary or secondary for replication systems that
   * support snapshotting only on primary.
   */
  'parameters': ({[key: string]: string});
  /**
   * Specifies where (regions, zones, racks, etc.) the provisioned
   * snapshot MUST be usable from. A snapshot is usable from a location
   * if volumes created from that snapshot are guaranteed to be
   * accessible from that location.
   * An SP SHALL advertise the requirements for topological
   * accessibility information in documentation. COs SHALL only specify
   * topological accessibility information supported by the SP.
   * This field is OPTIONAL.
   * This field SHALL NOT be specified unless the SP has the
   * SNAPSHOT_ACCESSIBILITY_CONSTRAINTS plugin capability.
   * If this field is not specified and the SP has the
   * SNAPSHOT_ACCESSIBILITY_CONSTRAINTS plugin capability, the SP MAY
   * choose where the provisioned snapshot is usable from.
   */
  'accessibility_requirements': (_csi_v1_TopologyRequirement__Output | null);
}
