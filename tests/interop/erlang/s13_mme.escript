#!/usr/bin/env escript
%% -*- erlang -*-
%%! -noshell
%%
%% An MME built on Erlang/OTP diameter, run against the EIR gateway by tests/interop/test_erlang.py.
%%
%% The RFC 6733 base dictionary (diameter_gen_base_rfc6733) and the S13 dictionary s13.dia
%% (compiled here with diameter_make, no erlc needed) are the real OTP codecs: OTP decodes every
%% answer of the gateway strictly and reports what it disliked in the packet's errors field.
%%
%% Usage: s13_mme.escript S13_DIA HOST PORT SPEC_FILE
%%        s13_mme.escript decode S13_DIA HEX_FILE
%% The decode form runs OTP's decoder (diameter_codec, the S13 dictionary with the RFC 6733 base
%% dictionary inherited) on captured messages, one "LABEL HEX" per line, and prints what it
%% decoded and the errors it found, without any connection.
%% SPEC_FILE holds Erlang terms (file:consult/1):
%%   {origin_host, "mme.otp.test"}.  {origin_realm, "otp.test"}.
%%   {check, Index, Imei | undefined, Imsi | undefined, Sv | undefined, DestinationRealm,
%%    [{ProxyHost, ProxyState}]}.   (any number, sent in order)
%%   {watchdog_wait_ms, N}.   (optional: stay idle N ms so OTP's watchdog sends DWRs, Tw = 6 s)
%%   {tls, CertFile, KeyFile, CaFile}.   (optional: TLS with OTP's ssl, client certificate)
%%   {watchdog_timer_ms, N}.   (optional: OTP's Tw, default 6000)
%%   {await_gateway_dpr_ms, N}.   (optional: no DPR of ours; wait up to N ms for the gateway's)
%%   {transport, sctp}.   (optional: diameter_sctp instead of diameter_tcp)
%% Output: one line per fact, tab-separated KEY=VALUE fields, values as Erlang terms (~0p).

-module(s13_mme).
-mode(compile).

-export([main/1]).
-export([peer_up/3, peer_down/3, pick_peer/4, pick_peer/3, prepare_request/3,
         prepare_retransmit/3, handle_answer/4, handle_error/4, handle_request/3]).

-define(SVC, mme).
-define(S13, 16777252).
-define(TGPP, 10415).

main(["decode", Dia, HexFile]) ->
    try decode_file(Dia, HexFile) of
        ok -> out(done, []), halt(0)
    catch
        Class:Reason:Stack ->
            out(crash, [{class, Class}, {reason, Reason}, {stack, Stack}]),
            halt(2)
    end;
main([Dia, Host, PortS, SpecFile]) ->
    try run(Dia, Host, list_to_integer(PortS), SpecFile) of
        ok -> out(done, []), halt(0)
    catch
        Class:Reason:Stack ->
            out(crash, [{class, Class}, {reason, Reason}, {stack, Stack}]),
            halt(2)
    end;
main(_) ->
    io:format(standard_error, "usage: s13_mme.escript S13_DIA HOST PORT SPEC_FILE~n", []),
    halt(64).

load_dictionary(Dia) ->
    {ok, [Forms | _]} = diameter_make:codec(Dia, [forms, return]),
    {ok, s13, Beam} = compile:forms(Forms, [binary]),
    {module, s13} = code:load_binary(s13, "s13.erl", Beam),
    out(dictionary, [{name, s13:name()}, {id, s13:id()}]).

decode_file(Dia, HexFile) ->
    load_dictionary(Dia),
    {ok, Text} = file:read_file(HexFile),
    Opts = #{decode_format => list, string_decode => false, strict_mbit => true,
             strict_arities => decode, rfc => 6733, failed_avp => false,
             app_dictionary => s13, incoming_maxlen => 16#FFFFFF, ordered_encode => false},
    lists:foreach(
      fun(Line) ->
              [Label, Hex] = binary:split(Line, <<" ">>),
              Bin = binary:decode_hex(Hex),
              %% Base messages, and E-bit answers (RFC 6733 §7.2 answer-message), belong to the
              %% base dictionary, as OTP's own diameter_traffic decodes them.
              <<_:4/binary, Flags, _:3/binary, AppId:32, _/binary>> = Bin,
              Mod = case AppId == 0 orelse Flags band 16#20 /= 0 of
                        true -> diameter_gen_base_rfc6733;
                        false -> s13
                    end,
              Pkt = diameter_codec:decode(Mod, Opts#{app_dictionary => Mod}, Bin),
              Name = case element(4, Pkt) of [N | _] -> N; Other -> Other end,
              out(decoded, [{label, binary_to_list(Label)}, {name, Name},
                            {errors, [error_code(E) || E <- element(6, Pkt)]},
                            {msg, element(4, Pkt)}])
      end,
      [L || L <- binary:split(Text, <<"\n">>, [global, trim_all])]),
    ok.

%% An entry of the packet's errors: Result-Code, or {Result-Code, AVP}: shown as
%% Result-Code or {Result-Code, AvpName}.
error_code({Code, Avp}) when is_tuple(Avp) -> {Code, element(7, Avp)};
error_code(Other) -> Other.

run(Dia, Host, Port, SpecFile) ->
    {ok, Spec} = file:consult(SpecFile),
    load_dictionary(Dia),
    OH = proplists:get_value(origin_host, Spec),
    OR = proplists:get_value(origin_realm, Spec),
    ok = diameter:start(),
    true = diameter:subscribe(?SVC),
    ok = diameter:start_service(?SVC,
           [{'Origin-Host', OH}, {'Origin-Realm', OR},
            {'Host-IP-Address', [{127,0,0,1}]},
            {'Vendor-Id', 0}, {'Product-Name', "OTP diameter MME"},
            {'Auth-Application-Id', [?S13]},
            {'Supported-Vendor-Id', [?TGPP]},
            {decode_format, list},
            {string_decode, false},
            {application, [{alias, common}, {dictionary, diameter_gen_base_rfc6733},
                           {module, ?MODULE}]},
            {application, [{alias, s13}, {dictionary, s13}, {module, ?MODULE},
                           {answer_errors, callback}]}]),
    {ok, Addr} = inet:parse_address(Host),
    Tls = case lists:keyfind(tls, 1, Spec) of
              false ->
                  [];
              {tls, Cert, Key, Ca} ->
                  %% {ssl_options, true}: TLS from the first byte (RFC 6733 §2.1), the ssl
                  %% options then sit in transport_config (a list would mean RFC 3588 inband
                  %% TLS after CER/CEA). OTP's ssl verifies the gateway's certificate.
                  {ok, _} = application:ensure_all_started(ssl),
                  [{ssl_options, true}, {certfile, Cert}, {keyfile, Key}, {cacertfile, Ca},
                   {verify, verify_peer}, {server_name_indication, "eir.localdomain"}]
          end,
    Module = case proplists:get_value(transport, Spec, tcp) of
                 tcp -> diameter_tcp;
                 sctp -> diameter_sctp
             end,
    {ok, Ref} = diameter:add_transport(?SVC,
           {connect, [{transport_module, Module},
                      {transport_config, [{raddr, Addr}, {rport, Port},
                                          {ip, {127,0,0,1}}, {reuseaddr, true} | Tls]},
                      {watchdog_timer, proplists:get_value(watchdog_timer_ms, Spec, 6000)},
                      {dpa_timeout, 5000},
                      {connect_timer, 30000}]}),
    case wait_up(Ref, 8000) of
        ok ->
            [ecr(OH, OR, C) || {check, _, _, _, _, _, _} = C <- Spec],
            case proplists:get_value(watchdog_wait_ms, Spec) of
                undefined -> ok;
                Wait -> timer:sleep(Wait), statistics()
            end,
            case proplists:get_value(await_gateway_dpr_ms, Spec) of
                undefined ->
                    T0 = erlang:monotonic_time(millisecond),
                    ok = diameter:remove_transport(?SVC, Ref),
                    wait_down(Ref, 8000),
                    out(disconnected, [{ms, erlang:monotonic_time(millisecond) - T0}]);
                Ms ->
                    %% Stay up (answering the gateway's DWRs) until the gateway's DPR.
                    out(waiting, []),
                    wait_down(Ref, Ms)
            end,
            diameter:stop_service(?SVC),
            ok;
        failed ->
            ok
    end.

%% The CEA as OTP decoded it; or why the capabilities exchange failed.
wait_up(Ref, Timeout) ->
    receive
        {diameter_event, ?SVC, {up, Ref, _Peer, _Config, Pkt}} ->
            out(cea, [{msg, element(4, Pkt)}, {errors, element(6, Pkt)}]),
            ok;
        {diameter_event, ?SVC, {closed, Ref, {'CEA', _Caps, Pkt} = Reason, _Config}}
          when element(1, Pkt) == diameter_packet ->
            %% The CEA decoded, but its Result-Code refused us.
            Hdr = element(2, Pkt),
            [Rc] = [element(8, A) || A <- element(3, Pkt), element(2, A) == 268],
            out(cea_failed, [{result_code, Rc}, {error_bit, element(10, Hdr)},
                             {errors, element(6, Pkt)}, {reason, Reason}]),
            failed;
        {diameter_event, ?SVC, {closed, Ref, Reason, _Config}} ->
            out(cea_failed, [{reason, Reason}]),
            failed;
        {diameter_event, ?SVC, Info} ->
            out(event, [{info, Info}]),
            wait_up(Ref, Timeout)
    after Timeout ->
            out(cea_timeout, []),
            failed
    end.

wait_down(Ref, Timeout) ->
    receive
        {diameter_event, ?SVC, {down, Ref, _Peer, _Config}} -> out(down, []);
        {diameter_event, ?SVC, Info} -> out(event, [{info, Info}]), wait_down(Ref, Timeout)
    after Timeout -> out(down_timeout, [])
    end.

ecr(OH, OR, {check, Index, Imei, Imsi, Sv, DestRealm, Proxies}) ->
    Terminal = [{'IMEI', [Imei]} || Imei /= undefined]
               ++ [{'Software-Version', [Sv]} || Sv /= undefined],
    Req = ['ECR',
           {'Session-Id', diameter:session_id(OH)},
           {'Auth-Session-State', 1},
           {'Origin-Host', OH},
           {'Origin-Realm', OR},
           {'Destination-Realm', DestRealm},
           {'Terminal-Information', Terminal},
           {'Vendor-Specific-Application-Id',
            [[{'Vendor-Id', ?TGPP}, {'Auth-Application-Id', [?S13]}]]}]
          ++ [{'User-Name', [Imsi]} || Imsi /= undefined]
          ++ [{'Proxy-Info', [[{'Proxy-Host', H}, {'Proxy-State', St}] || {H, St} <- Proxies]}
              || Proxies /= []],
    case diameter:call(?SVC, s13, Req, [{timeout, 5000}]) of
        {answer, Hdr, [Name | Avps] = Msg, Errors} ->
            out(eca, [{index, Index}, {name, Name}, {flags, flags(Hdr)},
                      {result_code, value('Result-Code', Avps)},
                      {experimental, experimental(value('Experimental-Result', Avps))},
                      {status, value('Equipment-Status', Avps)},
                      {failed, failed(value('Failed-AVP', Avps))},
                      {proxy_hosts, [proplists:get_value('Proxy-Host', P)
                                     || P <- proplists:get_value('Proxy-Info', Avps, [])]},
                      {errors, Errors}, {msg, Msg}]);
        Other ->
            out(eca_error, [{index, Index}, {result, Other}])
    end.

%% An AVP's value in list format: optional ones come as [] or [V].
value(Name, Avps) ->
    case proplists:get_value(Name, Avps) of
        undefined -> none;
        [] -> none;
        [V] -> V;
        V -> V
    end.

experimental(none) -> none;
experimental(Group) ->
    {proplists:get_value('Vendor-Id', Group), proplists:get_value('Experimental-Result-Code', Group)}.

%% Failed-AVP ::= 1* {AVP}: the {Code, Vendor} of each AVP it holds.
failed(none) -> none;
failed(Group) ->
    [{element(2, A), element(3, A)} || A <- lists:flatten(proplists:get_value('AVP', Group, []))].

flags(Hdr) ->
    %% #diameter_header{version, length, cmd_code, application_id, hop_by_hop_id,
    %%                  end_to_end_id, is_request, is_proxiable, is_error, is_retransmit}
    [F || {F, true} <- [{request, element(8, Hdr)}, {proxiable, element(9, Hdr)},
                        {error, element(10, Hdr)}, {retransmit, element(11, Hdr)}]].

%% Per-peer message counters kept by OTP: {{AppId, Cmd, RBit}, send|recv[, Result]}.
statistics() ->
    lists:foreach(
      fun({_Ref, Counters}) ->
              [out(stat, [{key, K}, {value, V}]) || {K, V} <- Counters];
         (Other) -> out(stat_other, [{term, Other}])
      end,
      diameter:service_info(?SVC, statistics)).

out(Tag, Fields) ->
    io:format("~s~ts~n", [Tag, [io_lib:format("\t~s=~0tp", [K, V]) || {K, V} <- Fields]]).

%% -- diameter_app callbacks -------------------------------------------------------------------

peer_up(_Svc, _Peer, State) -> State.
peer_down(_Svc, _Peer, State) -> State.
pick_peer([Peer | _], _Remote, _Svc, _State) -> {ok, Peer};
pick_peer([], _Remote, _Svc, _State) -> false.
pick_peer([Peer | _], _Svc, _State) -> {ok, Peer};
pick_peer([], _Svc, _State) -> false.
prepare_request(Pkt, _Svc, _Peer) -> {send, Pkt}.
prepare_retransmit(Pkt, _Svc, _Peer) -> {send, Pkt}.
%% answer_errors = callback: the answer arrives here even when OTP found errors in it.
handle_answer(Pkt, _Request, _Svc, _Peer) ->
    {answer, element(2, Pkt), element(4, Pkt), element(6, Pkt)}.
handle_error(Reason, _Request, _Svc, _Peer) -> {error, Reason}.
handle_request(_Pkt, _Svc, _Peer) -> {answer_message, 3001}.
