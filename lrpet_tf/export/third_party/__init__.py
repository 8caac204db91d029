"""Code lrpet_tf carries from other projects, unmodified, under their licenses.

* `tflite_metadata_schema`: the flatc-generated Python code of the TFLite
  metadata schema (tflite-support 0.4.4, Apache License 2.0), which
  `lrpet_tf.export.ImageClassifierMetadata` writes and reads.
"""
