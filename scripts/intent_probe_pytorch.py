#!/usr/bin/python3
# The probe that chose the intent recipe before the TypeScript trainer had it: unidirectional GRU over fastText-style word+ngram embeddings on CLINC150 train, scored on validation.
# Run from the project root with Debian's torch: /usr/bin/python3 scripts/intent_probe_pytorch.py [dim hidden buckets epochs gru|lstm all-steps(1|0)].
# It prints the final-word in-scope accuracy and oos recall on the validation split after each epoch.
import json, sys, time, re, unicodedata, random
import torch, torch.nn as nn
torch.set_num_threads(1); torch.manual_seed(1); random.seed(1)
D=int(sys.argv[1]) if len(sys.argv)>1 else 64; H=int(sys.argv[2]) if len(sys.argv)>2 else 128
BUCKETS=int(sys.argv[3]) if len(sys.argv)>3 else 20000; EPOCHS=int(sys.argv[4]) if len(sys.argv)>4 else 12
CELL=sys.argv[5] if len(sys.argv)>5 else 'gru'; ALLSTEPS=(sys.argv[6] if len(sys.argv)>6 else '1')=='1'
def norm(w):
    l=unicodedata.normalize('NFKC',w).lower()
    s=re.sub(r"^[^\w']+|[^\w']+$","",l).strip("'")
    return s or l
def grams(w):
    c='<'+w+'>'; out=[]
    for n in range(3,6):
        for i in range(len(c)-n+1): out.append(c[i:i+n])
    return out
def fnv(s):
    h=0x811c9dc5
    for b in s.encode(): h^=b; h=(h*0x01000193)&0xffffffff
    return h
load=lambda f:[json.loads(l) for l in open(f)]
tr=load('../shared/data/clinc150-train.jsonl'); va=load('../shared/data/clinc150-validation.jsonl')
labels=sorted({r['intent'] for r in tr}); L={l:i for i,l in enumerate(labels)}
from collections import Counter
cnt=Counter(norm(w) for r in tr for w in r['text'].split())
vocab=[w for w,c in cnt.items() if c>=1]; V={w:i for i,w in enumerate(vocab)}
def rows(w):
    n=norm(w); r=[V[n]] if n in V else []
    if BUCKETS: r+= [len(vocab)+fnv(g)%BUCKETS for g in grams(n)]
    return r or [len(vocab)+BUCKETS]
def enc(rs): return [([rows(w) for w in r['text'].split()], L[r['intent']]) for r in rs]
T=enc(tr); VA=enc(va)
unk=sum(1 for r in va for w in r['text'].split() if norm(w) not in V); tot=sum(len(r['text'].split()) for r in va)
print('vocab',len(vocab),'val unseen tokens %.3f'%(unk/tot), flush=True)
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.emb=nn.EmbeddingBag(len(vocab)+BUCKETS+1,D,mode='mean'); s.drop=nn.Dropout(0.25)
        s.rnn=(nn.GRU if CELL=='gru' else nn.LSTM)(D,H,batch_first=True); s.head=nn.Linear(H,len(labels))
    def forward(s,batch):
        flat=[r for ws,_ in batch for w in ws for r in [w]]
        idx=torch.tensor([i for w in flat for i in w]); off=torch.tensor([0]+list(__import__('itertools').accumulate(len(w) for w in flat))[:-1])
        e=s.emb(idx,off); lens=[len(ws) for ws,_ in batch]; T_=max(lens)
        x=torch.zeros(len(batch),T_,D); k=0
        for b,l in enumerate(lens): x[b,:l]=e[k:k+l]; k+=l
        out,_=s.rnn(s.drop(x)); return s.head(s.drop(out)), lens
m=M(); opt=torch.optim.Adam(m.parameters(),lr=3e-3)
oos=L['oos']
def evaluate(data):
    m.eval(); ok=0;n=0;oosok=0;oosn=0
    with torch.no_grad():
        for i in range(0,len(data),256):
            b=data[i:i+256]; y,lens=m(b)
            for j,(ws,lab) in enumerate(b):
                p=y[j,lens[j]-1].argmax().item()
                if lab==oos: oosn+=1; oosok+=p==oos
                else: n+=1; ok+=p==lab
    m.train(); return ok/n, oosok/max(oosn,1)
t0=time.time()
for ep in range(EPOCHS):
    random.shuffle(T)
    for i in range(0,len(T),32):
        b=T[i:i+32]; y,lens=m(b)
        if ALLSTEPS:
            tgt=torch.full(y.shape[:2],-100,dtype=torch.long)
            for j,(ws,lab) in enumerate(b): tgt[j,:lens[j]]=lab
            loss=nn.functional.cross_entropy(y.reshape(-1,y.shape[-1]),tgt.reshape(-1),ignore_index=-100,label_smoothing=0.1)
        else:
            last=torch.stack([y[j,lens[j]-1] for j in range(len(b))]); loss=nn.functional.cross_entropy(last,torch.tensor([l for _,l in b]),label_smoothing=0.1)
        opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(m.parameters(),5); opt.step()
    ins,oo=evaluate(VA); print(f'epoch {ep+1} {time.time()-t0:.0f}s in-scope {ins:.4f} oos-recall {oo:.3f}',flush=True)
