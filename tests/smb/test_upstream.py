"""The impacket 0.13.1 server gaps the lab's engine works around (issue 15), each shown in
impacket itself: when one of these fails, upstream fixed it and the workaround can go."""

from __future__ import annotations

import inspect

from impacket import smb3structs as smb2
from impacket.smbserver import SMB2Commands


def test_create_answers_the_disposition_as_create_action():
    """MS-SMB2 2.2.14: CreateAction is 0-3; impacket echoes CreateDisposition (0-5), so a
    client that checks the field (smbprotocol) refuses "overwrite-if" (5). The engine sets
    it from whether the file was there (engine.CREATE_ACTIONS)."""
    assert "respSMBCommand['CreateAction'] = createDisposition" in inspect.getsource(SMB2Commands.smb2Create)


def test_create_fills_a_change_time_field_its_structure_does_not_have():
    """impacket writes "LastChangeTime" into SMB2Create_Response, whose field is
    "ChangeTime": the response always says 0 (1601). The engine copies it over."""
    fields = [field[0] for field in smb2.SMB2Create_Response.structure]
    assert "ChangeTime" in fields and "LastChangeTime" not in fields
    assert "respSMBCommand['LastChangeTime']" in inspect.getsource(SMB2Commands.smb2Create)


def test_negotiate_answers_2_0_2_whatever_was_offered():
    """No 2.1 or 3.x (services.smb.dialects adds them around impacket)."""
    source = inspect.getsource(SMB2Commands.smb2Negotiate)
    assert "respSMBCommand['DialectRevision'] = smb2.SMB2_DIALECT_002" in source
    assert "SMB2_DIALECT_311" not in source and "NegotiateContext" not in source


def test_ntlm_challenge_never_offers_seal():
    """The CHALLENGE echoes SIGN but never SEAL, and a client that wants SMB 3 encryption
    gives up (mechlistmic.echo_seal)."""
    source = inspect.getsource(SMB2Commands._ntlm_auth)
    assert "ansFlags |= ntlm.NTLMSSP_NEGOTIATE_SIGN" in source and "NTLMSSP_NEGOTIATE_SEAL" not in source


def test_srvsvc_lists_one_share_table_to_everybody():
    """SRVSServer answers NetrShareEnum from the server's one share table, whoever asks
    (services.smb.srvsvc lists what the session's user may open)."""
    from impacket.smbserver import SRVSServer

    source = inspect.getsource(SRVSServer.NetrShareEnum)
    assert "for i in self._shares" in source and "connData" not in source
