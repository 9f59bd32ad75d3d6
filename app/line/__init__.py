"""Line integrations: the station as a device the line's PLC talks to (OPC UA Machine Vision, Modbus TCP)."""
