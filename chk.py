import http.client, json, sys
# chk.py PORT N [hostfmt] [expect-fmt]: request svc1..N by Host, print mismatches
port=int(sys.argv[1]); n=int(sys.argv[2]); hf=sys.argv[3] if len(sys.argv)>3 else "svc{i}"
bad=0; codes={}
for i in range(1,n+1):
    c=http.client.HTTPConnection('127.0.0.1',port,timeout=8)
    h=hf.format(i=i)
    try:
        c.request('GET','/',headers={'Host':h}); r=c.getresponse(); d=r.read()
        be=r.getheader('x-backend')
    except Exception as e:
        print("ERR",h,e); bad+=1; continue
    codes[r.status]=codes.get(r.status,0)+1
    exp=f"svc{i}"
    if r.status!=200 or be!=exp:
        bad+=1; print("MISMATCH",h,r.status,be,d[:120])
print("checked",n,"bad",bad,codes)
