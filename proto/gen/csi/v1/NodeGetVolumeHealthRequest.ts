// Original file: proto/csi.proto


export interface NodeGetVolumeHealthRequest {
  /**
   * The ID of the volume.
   * This field is REQUIRED.
   */
  'volume_id'?: (string);
  /**
   * The path where the volume was published or CO attempted to
   * publish on the node. If not empty, it MUST be an absolute path
   * in the root filesystem of the process serving this request.
   * This field is OPTIONAL.
   * This field overrides the general CSI size limit.
   * SP SHOULD support the maximum path length allowed by the operating
   * system/filesystem, but, at a minimum, SP MUST accept a max path
   * length of at least 128 bytes.
   */
  'volume_publish_path'?: (string);
  /**
   * The path where the volume was staged or CO attempted to
   * stage the volume, if the plugin has the
   * STAGE_UNSTAGE_VOLUME capability, otherwise empty.
   * If not empty, it MUST be an absolute path in the root
   * filesystem of the process serving this request.
   * This field is OPTIONAL.
   * This field overrides the general CSI size limit.
   * SP SHOULD support the maximum path length allowed by the operating
   * system/filesystem, but, at a minimum, SP MUST accept a max path
   * length of at least 128 bytes.
   */
  'staging_target_path'?: (string);
}

export interface NodeGetVolumeHealthRequest__Output {
  /**
   * The ID of the volume.
   * This field is REQUIRED.
   */
  'volume_id': (string);
  /**
   * The path where the volume was published or CO attempted to
   * publish on the node. If not empty, it MUST be an absolute path
   * in the root filesystem of the process serving this request.
   * This field is OPTIONAL.
   * This field overrides the general CSI size limit.
   * SP SHOULD support the maximum path length allowed by the operating
   * system/filesystem, but, at a minimum, SP MUST accept a max path
   * length of at least 128 bytes.
   */
  'volume_publish_path': (string);
  /**
   * The path where the volume was staged or CO attempted to
   * stage the volume, if the plugin has the
   * STAGE_UNSTAGE_VOLUME capability, otherwise empty.
   * If not empty, it MUST be an absolute path in the root
   * filesystem of the process serving this request.
   * This field is OPTIONAL.
   * This field overrides the general CSI size limit.
   * SP SHOULD support the maximum path length allowed by the operating
   * system/filesystem, but, at a minimum, SP MUST accept a max path
   * length of at least 128 bytes.
   */
  'staging_target_path': (string);
}
