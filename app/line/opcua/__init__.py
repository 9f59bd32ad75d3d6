"""The pieces of the OPC UA Machine Vision server (app.line.opcua_mv): information model, results, security."""
