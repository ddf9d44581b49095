"""A small estate for the MCP proxy tests: tools, a resource and a prompt on McpServer::"tools"."""

from __future__ import annotations

from pathlib import Path

from tests.harness.estate import STD_CONTEXT, write_estate

SERVER_ID = "tools"
RESOURCE = "https://tools.example.com/mcp"

SCHEMA = f"""
entity AgentGroup;
entity Agent in [AgentGroup];
entity Group;
entity User in [Group];
entity McpServer;
entity Tool in [McpServer] {{ risk?: String }};
entity McpResource in [McpServer];
entity Prompt in [McpServer];
action call_tool appliesTo {{
  principal: [Agent], resource: [Tool],
  context: {{ {STD_CONTEXT} arguments: {{ amount?: Long, to?: String, path?: String, n?: Long }} }}
}};
action get_prompt appliesTo {{
  principal: [Agent], resource: [Prompt], context: {{ {STD_CONTEXT} arguments: {{ topic?: String }} }}
}};
action read_resource, list_tools, list_resources, list_prompts appliesTo {{
  principal: [Agent], resource: [McpServer, McpResource], context: {{ {STD_CONTEXT} }}
}};
action delegate appliesTo {{ principal: [User, Agent], resource: [Agent], context: {{ {STD_CONTEXT} }} }};
"""

POLICIES = {
    "tools.cedar": """
        @id("read-files")
        permit(principal in AgentGroup::"tool-users", action == Action::"call_tool", resource == Tool::"read_file");

        @id("count")
        permit(principal in AgentGroup::"tool-users", action == Action::"call_tool", resource == Tool::"count_slowly");

        @id("small-payments")
        permit(principal in AgentGroup::"tool-users", action == Action::"call_tool", resource == Tool::"send_payment")
        when { context.arguments has amount && context.arguments.amount <= 100 };

        @id("no-etc")
        forbid(principal, action == Action::"call_tool", resource)
        when { context.arguments has path && context.arguments.path like "/etc/*" };

        @id("resources-and-prompts")
        permit(principal in AgentGroup::"tool-users", action in [Action::"read_resource", Action::"get_prompt"],
               resource in McpServer::"tools");
    """,
    "delegation.cedar": """
        @id("users-delegate")
        permit(principal is User, action == Action::"delegate", resource in AgentGroup::"tool-users");
    """,
}

AGENTS = """
agents:
  - {id: assistant, owner: team@example.com, groups: [tool-users]}
  - {id: outsider, owner: team@example.com}
"""

ENTITIES = '[{"uid": {"type": "McpServer", "id": "tools"}, "attrs": {}, "parents": []}]'


def write_mcp_estate(root: Path) -> Path:
    return write_estate(root, schema=SCHEMA, agents=AGENTS, entities=ENTITIES, policies=POLICIES)
