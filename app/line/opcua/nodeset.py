"""The OPC 40100-1 information model: the official nodeset (completed where it is incomplete) and the station's instance.

The nodeset is the OPC Foundation's `Opc.Ua.MachineVision.NodeSet2.xml` 1.0.0
(resources/opcua/, see its README). Two things in it need care:

- `RecipeIdExternalDataType`, `RecipeIdInternalDataType` and `ConfigurationIdDataType`
  are subtypes of the abstract `BinaryIdBaseDataType` (Id, Version, Hash...) with
  *empty* definitions. OPC 10000-3 wants a structure subtype's DataTypeDefinition to
  list all its fields, inherited ones included, and clients build the types from that
  attribute: asyncua's `load_data_type_definitions()` fails on them and on every
  structure using them (ResultDataType...). `completed_nodeset()` copies the inherited
  fields in before the import, so the server publishes complete definitions.
- The automatic-mode states (Initialized, Ready, ...) have no modelling rule: they
  exist on `VisionAutomaticModeStateMachineType` only, never in an instance. As in
  OPC 10000-16, the sub-machine's `CurrentState/Id` names those type nodes; the
  top-level states are in the instance (VisionSystemType declares them mandatory).

Events: asyncua delivers an event only to subscriptions on its emitting node.
`EventSender` sends each one to the vision system and to every notifier above it
(HasNotifier up to the Server object), so a PLC subscribed on the Server object
gets them too, with every field typed (asyncua's generic event objects leave
custom-structure fields untyped, and they arrive empty).
"""

from __future__ import annotations

import copy
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.event_objects import BaseEvent
from asyncua.common.instantiate_util import instantiate
from asyncua.common.manage_nodes import delete_nodes

from app.paths import resource

MV_URI = "http://opcfoundation.org/UA/MachineVision"
STATION_URI = "urn:metal-inspection-station:opcua"  # the namespace of the station's own nodes
NODESET = "opcua/Opc.Ua.MachineVision.NodeSet2.xml"
_XML_NS = "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"
VISION_SYSTEM = "VisionSystem"  # string NodeId of the instance; its children are "VisionSystem.<path>"

# Numeric ids in the MachineVision namespace (nodeset 1.0.0).
VISION_SYSTEM_TYPE = 1003
VISION_STATE_MACHINE_TYPE = 1017
AUTOMATIC_MODE_TYPE = 1021
EVENT_TYPES = {
    "ResultReady": 1024, "AcquisitionDone": 1025, "Error": 1019, "ErrorResolved": 1020, "StateChanged": 1018,
    "JobStarted": 1013, "Ready": 1023, "RecipePrepared": 1022, "VisionInformation": 1038,
}

# Optional parts of VisionSystemType this station does not implement: removed from the instance, so a
# client sees only what works (the table in docs/opcua.md).
NOT_IMPLEMENTED = (
    "ConfigurationManagement", "SafetyStateManagement", "DiagnosticLevel",
    "VisionStateMachine.PreoperationalStepModel", "VisionStateMachine.HaltedStepModel",
    "VisionStateMachine.ErrorStepModel",
    "VisionStateMachine.AutomaticModeStateMachine.InitializedStepModel",
    "VisionStateMachine.AutomaticModeStateMachine.ReadyStepModel",
    "VisionStateMachine.AutomaticModeStateMachine.SingleExecutionStepModel",
    "VisionStateMachine.AutomaticModeStateMachine.ContinuousExecutionStepModel",
    "VisionStateMachine.AutomaticModeStateMachine.SimulationMode",
    "RecipeManagement.AddRecipe", "RecipeManagement.RemoveRecipe", "RecipeManagement.Recipes",
    "RecipeManagement.RecipeTransfer", "RecipeManagement.Products", "RecipeManagement.PrepareProduct",
    "RecipeManagement.UnprepareProduct", "RecipeManagement.UnlinkProduct",
    "ResultManagement.Results", "ResultManagement.ResultTransfer",
)


def nodeset_path() -> Path:
    return resource(NODESET)


def completed_nodeset(path: Path | None = None) -> str:
    """The nodeset XML with every structure subtype's definition listing its inherited fields first."""
    ET.register_namespace("", _XML_NS)
    root = ET.parse(path or nodeset_path()).getroot()

    def q(tag: str) -> str:
        return f"{{{_XML_NS}}}{tag}"

    aliases = {a.get("Alias"): a.text for a in root.iter(q("Alias"))}
    types = {t.get("NodeId"): t for t in root.iter(q("UADataType"))}

    def parent_of(t: ET.Element) -> str | None:
        for ref in t.iter(q("Reference")):
            if ref.get("IsForward") == "false" and aliases.get(ref.get("ReferenceType"), ref.get("ReferenceType")) in (
                    "HasSubtype", "i=45"):
                return ref.text
        return None

    def fields(node_id: str) -> list[ET.Element]:
        t = types.get(node_id)
        definition = t.find(q("Definition")) if t is not None else None
        if definition is None:
            return []
        own = list(definition)
        names = {f.get("Name") for f in own}
        return [f for f in fields(parent_of(t) or "") if f.get("Name") not in names] + own

    for t in types.values():
        definition = t.find(q("Definition"))
        if definition is None or parent_of(t) not in types:
            continue
        inherited = [f for f in fields(parent_of(t)) if f.get("Name") not in {g.get("Name") for g in definition}]
        for i, f in enumerate(inherited):
            definition.insert(i, copy.deepcopy(f))
    return ET.tostring(root, encoding="unicode")


@dataclass
class VisionNodes:
    """Where things are: namespace indexes and the NodeIds the server writes to or binds."""

    mv: int  # MachineVision namespace index
    own: int  # the station's namespace index
    system: ua.NodeId

    def child(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"{VISION_SYSTEM}.{path}", self.own)

    def mv_id(self, numeric: int) -> ua.NodeId:
        return ua.NodeId(numeric, self.mv)


async def load_model(server: Server, name: str) -> VisionNodes:
    """Import the completed nodeset and create the station's VisionSystemType instance under Objects."""
    await server.import_xml(xmlstring=completed_nodeset())
    mv = await server.get_namespace_index(MV_URI)
    own = await server.register_namespace(STATION_URI)
    system_id = ua.NodeId(VISION_SYSTEM, own)
    await instantiate(server.nodes.objects, server.get_node(ua.NodeId(VISION_SYSTEM_TYPE, mv)), nodeid=system_id,
                      bname=ua.QualifiedName(name, own), dname=ua.LocalizedText(name))
    nodes = VisionNodes(mv, own, system_id)
    await delete_nodes(server.iserver.isession, [server.get_node(nodes.child(p)) for p in NOT_IMPLEMENTED], recursive=True)
    system = server.get_node(system_id)
    await system.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
    await server.nodes.server.add_reference(system_id, ua.ObjectIds.HasNotifier, forward=True, bidirectional=True)
    return nodes


async def state_ids(server: Server, type_id: ua.NodeId) -> dict[str, ua.NodeId]:
    """The states and transitions of a state machine type, by browse name."""
    out = {}
    for child in await server.get_node(type_id).get_children(refs=ua.ObjectIds.HasComponent):
        out[(await child.read_browse_name()).Name] = child.nodeid
    return out


def variant(value: Any, vtype: ua.VariantType) -> ua.Variant:
    return ua.Variant(value, vtype)


class _Event(BaseEvent):
    """A BaseEvent whose fields go out as they are: asyncua deep-copies every field of every event for every
    monitored item (half of the cost of sending one), needless here, where each event's values are built for
    it alone and never changed afterwards."""

    def to_event_fields(self, select_clauses: list[ua.SimpleAttributeOperand]) -> list[ua.Variant]:
        fields = []
        for sattr in select_clauses:
            name = self.browse_path_to_attribute_name(sattr.BrowsePath) if sattr.BrowsePath else \
                ua.AttributeIds(sattr.AttributeId).name
            value = getattr(self, name, None)
            fields.append(ua.Variant(None) if value is None else ua.Variant(value, self.data_types[name]))
        return fields


class EventSender:
    """Sends typed events from the vision system to it and every notifier above it (HasNotifier)."""

    def __init__(self, server: Server, nodes: VisionNodes, source_name: str):
        self.server = server
        self.nodes = nodes
        self.source_name = source_name
        self.notifiers: list[ua.NodeId] = []

    async def start(self) -> None:
        """Find the notifier chain: the vision system, then each inverse HasNotifier up to the Server object."""
        chain = [self.nodes.system]
        while len(chain) < 16:
            parents = await self.server.get_node(chain[-1]).get_referenced_nodes(
                refs=ua.ObjectIds.HasNotifier, direction=ua.BrowseDirection.Inverse)
            parents = [p.nodeid for p in parents if p.nodeid not in chain]
            if not parents:
                break
            chain.append(parents[0])
        self.notifiers = chain

    async def send(self, kind: str, message: str, severity: int = 100, fields: dict[str, ua.Variant] | None = None,
                   when: datetime | None = None) -> None:
        event = _Event(sourcenode=self.nodes.system, message=message, severity=severity)
        event.EventType = self.nodes.mv_id(EVENT_TYPES[kind])
        event.SourceName = self.source_name
        event.EventId = uuid.uuid4().bytes
        event.Time = when or datetime.now(timezone.utc)
        event.ReceiveTime = datetime.now(timezone.utc)
        local = time.localtime(event.Time.timestamp())
        event.LocalTime = ua.TimeZoneDataType(Offset=local.tm_gmtoff // 60, DaylightSavingInOffset=bool(local.tm_isdst > 0))
        for name, value in (fields or {}).items():
            event.add_property(name, value.Value, value.VariantType)
        service = self.server.iserver.subscription_service
        for notifier in self.notifiers:
            event.emitting_node = notifier
            await service.trigger_event(event)
