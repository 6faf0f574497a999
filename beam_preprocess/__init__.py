"""Apache Beam jobs that convert the native pose datasets into wild3d TFRecords."""
