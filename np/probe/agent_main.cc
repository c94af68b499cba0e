// probe_agent: serves a pod's ports and probes other addresses (see np/probe/agent.h).
#include "np/probe/agent.h"

int main(int argc, char** argv) { return np::probe::AgentMain(argc, argv); }
