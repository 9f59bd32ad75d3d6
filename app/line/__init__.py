"""Line integrations: the station as a device the line's PLC talks to (OPC UA Machine Vision, Modbus TCP)."""

from __future__ import annotations


class LineDevices:
    """The line devices the settings (or `serve`'s options) ask for, started on a running Station; `stop()` at the end."""

    def __init__(self, station, modbus: str = "", modbus_unit_id: int = 1, opcua: str = "", opcua_allow_anonymous: bool = False):
        self.station = station
        self.devices: list = []
        self.warnings: list[str] = []  # for the screen: e.g. an unsecured OPC UA endpoint
        self._modbus, self._unit_id = modbus.strip(), modbus_unit_id
        self._opcua, self._anonymous = opcua.strip(), opcua_allow_anonymous

    def start(self) -> LineDevices:
        """Start each device; ValueError (bad address) or OSError (cannot listen) naming it, the others stopped again."""
        try:
            if self._modbus:
                from app.line.modbus import ModbusDevice, parse_address

                self.devices.append(ModbusDevice(self.station, *parse_address(self._modbus), unit_id=self._unit_id).start())
            if self._opcua:
                from app.line.opcua_mv import OpcUaVisionServer

                self.devices.append(OpcUaVisionServer(self.station, self._opcua, allow_anonymous=self._anonymous).start())
                if self._anonymous:
                    self.warnings.append(f"OPC UA at {self._opcua} also accepts anonymous, unencrypted connections "
                                         "(opcua_allow_anonymous): for lab tests only")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for device in reversed(self.devices):
            device.stop()
        self.devices.clear()
